// Package pipeline is the Engine of a model cut into S stages: a driver
// (Driver) that sends each stage's worker its commands over a control link
// and collects the replies, and the worker (Worker) that runs one stage —
// its StageMachine's forwards and backwards, the activations and gradients
// it exchanges with its neighbours over its own (shaped, compressed,
// checksummed) links, its optimizer step.
//
// Where the stages run is not this package's business: a Placement, an
// interface this package owns, hands the driver its control links and
// says what can be done when a holder fails. InProcess (goroutines and
// pipes) lives here, beside the interface; package launch places stages in
// OS processes and on WebRTC peers.
//
// What to do about failures is not decided here either: the driver tells
// the membership machine (scheduler.Membership) what it observes and
// carries out its commands (recovery.go).
//
// # Control protocol
//
// Each control message is a TypeControl frame holding a JSON ctrlMsg and
// an optional binary blob (control.go). A step: driver → every worker
// "step" (tokens to the first stage, targets to the last); workers exchange
// tensors; each worker → driver "report" (its gradients' sum of squares);
// driver → every worker "apply" (the global clipping scale); worker →
// driver "done" (its timings and byte counts). "eval", "state" and
// "restore" work alike. With replicas per stage (docs/swarm.md) the driver
// has a control link to every replica and each gets its lane's
// micro-batches; the replicas of a stage sum their gradients among
// themselves before "report", and a "state" request to a further replica
// asks only for its state's digest, which must match the first replica's. "abort" starts a new epoch (frames and replies of
// older ones are stale everywhere); "relink" re-establishes a link; both
// ways, "hb" every faults.heartbeat.
//
// # Errors
//
// What goes wrong, and what becomes of it:
//   - A *failure (liveness.go) is what the driver saw: a control link that
//     broke (the holder is gone), a stage's "linkdown" (a link silent for
//     faults.link_timeout, or broken) or "reject" (a bad frame: checksum,
//     codec, or values beyond ±1e6). It goes to the membership machine
//     as a scheduler.Report.
//   - errPending stops an operation when the machine found a failure by
//     itself (a holder silent for faults.peer_timeout).
//   - On a worker, a *linkFailure and a *rejectedFrame (worker_links.go)
//     become "linkdown" and "reject" replies; any other error ends the
//     worker with an "error" reply, which ends the run.
//   - ErrCannotKill and ErrSpareRefused (errors.go) are what a Placement
//     says when a holder is not a process of this run, or a spare cannot
//     set its stage up.
//   - *engine.RollbackError is what the driver returns when recovery
//     rolled every stage back to a snapshot: the run loop resumes there.
//
// Import rules: pipeline imports engine and the floors below the runtime;
// it never imports launch or trainer, nor any network package beyond the
// transport interface.
package pipeline
