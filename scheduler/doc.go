// Package scheduler decides what each pipeline stage does and when, and
// which blocks each stage holds. It is pure: no goroutines, clocks, network
// or file I/O. The runtime feeds it real events and the simulator
// (scheduler/sim) feeds it simulated ones, so the same code is tested
// deterministically and projects throughput to settings we cannot run.
//
// # Schedules
//
// A model of nLayer blocks is cut into S stages (Assign, Split). Each
// optimizer step runs M micro-batches. Stage i receives micro-batch j's
// activation from stage i-1, runs its forward and sends the output to i+1;
// the last stage computes the loss and starts the backward of j itself;
// gradients flow back the same way. After its M backwards a stage runs its
// optimizer step. The first and last stage share the tied token embedding
// (wte is the LM head): after its last backward each sends its wte gradient
// to the other and adds the one it receives before the optimizer step
// (Megatron-style), so both apply the same update.
//
// Two schedules order the compute on a stage (Order): GPipe (all forwards,
// then all backwards in reverse micro-batch order; holds M micro-batches of
// activations) and OneFOneB (PipeDream-flush: S-i-1 warm-up forwards, then
// one forward / one backward, then the remaining backwards; holds at most
// S-i).
//
// With equal stages and free links both have the same bubble, (S-1)/(M+S-1)
// of the step. With link latency they differ: GPipe pays 2(S-1) one-way
// trips per step, standard 1F1B about one neighbour round trip per
// micro-batch, because its warm-up leaves nothing to compute while a message
// is in flight (TestLatency in scheduler/sim). Pipeline.Lookahead widens
// 1F1B's warm-up; LookaheadFor(roundTrip, tf, tb) gives the smallest that
// hides the round trip, which makes 1F1B as fast as GPipe on latency-bound
// links, and faster on bandwidth-bound ones (it overlaps activation and
// gradient traffic), while holding fewer activations than GPipe's M.
//
// Both still flush at every step: the last micro-batch of a step crosses
// the whole pipe and back before the next step's first forward. Async
// (AsyncMachine) does not: the micro-batches of all steps form one stream,
// each stage runs 1F1B over it with Pipeline.InFlight = D more micro-batches
// in flight than the stage after it (InFlightFor picks D from the round
// trip), applies step s's update as soon as it has step s's gradients, and
// runs each backward on the weight version its forward used (the machine
// names versions in its actions and says when to Stash and DropVersion a
// copy). Its bounds (stashed versions, gradient buffers, staleness) are on
// AsyncMachine; docs/async.md explains them and what the runtime must do.
//
// # Driving a StageMachine
//
// One StageMachine per stage (NewStage, or NewStageMachine for the plain
// schedules; NewMachine gives the Machine interface for any schedule,
// AsyncMachine included). It enforces the schedule's order and offers
// an action only when its input is there. The runtime loop:
//
//	st, err := scheduler.NewStageMachine(kind, S, M, stage)
//	slots := make([]Activations, st.MaxInFlight())
//	for {
//		a := st.Next()
//		switch a.Kind {
//		case scheduler.ActionForward:
//			// input: stage 0 reads micro-batch a.Micro of step a.Step from
//			// the data loader; other stages use the received activation.
//			// Keep what backward needs in slots[a.Slot].
//		case scheduler.ActionBackward:
//			// input: the last stage uses its loss; others the received
//			// gradient. Add into the gradient buffers; slots[a.Slot] is
//			// free afterwards.
//		case scheduler.ActionOptimizerStep:
//			// first/last stage: add the peer's embedding gradient first
//			// (it has arrived, or the machine would not offer this).
//			// Apply the optimizer, zero the gradients.
//		case scheduler.ActionWait:
//			// Block until a message arrives (a.WaitFor / a.Micro say which
//			// one is needed; time spent here is the stage's recv_wait).
//			// Decode it, keep its payload, then feed EVERY arrival in:
//			//	st.Step(scheduler.Arrived(msg))
//			// Arrivals may be for other micro-batches or the next step;
//			// the machine keeps them. Step errors mean a forged, stale or
//			// duplicate message: log and drop it (or fail the run).
//			continue
//		case scheduler.ActionDone:
//			// Step a.Step is finished: record metrics, checkpoint, stop
//			// or begin the next step.
//			st.Advance()
//			continue
//		}
//		st.Step(scheduler.Completed(a))     // after the compute finished
//		for _, m := range st.Sends(a) {     // then hand its outputs to the
//			send(m)                         // sender; never wait for them
//		}
//	}
//
// Call Step(Completed(a)) only after the compute has finished, and send
// Sends(a) only after that: a message must never announce work that is not
// done. The machine never waits on a send; the runtime sends in the
// background, in the order Sends lists; the machine accepts arrivals in
// any order, so the transport need not preserve order across messages. A
// runtime that receives in a background
// goroutine may hand arrivals to the loop at any time, and the loop feeds
// them with Step between Next calls (the machine is not safe for
// concurrent use). Messages carry their Step; a stage accepts messages for
// its current step and the next one (the upstream stage may already be
// forwarding the next step while this one runs its optimizer).
//
// Received payloads: keep each by (Step, Micro) until the Forward or
// Backward that consumes it runs; up to M activations of the next step can
// arrive before this stage finishes the current one, so do not size that
// buffer by MaxInFlight (which counts only forwarded, not yet
// backwarded, micro-batches).
//
// Wait time is the stage's idle time: the runtime can attribute it to the
// network when the awaited message was already sent (the simulator does).
//
// Message routing: Activation goes i → i+1, Gradient i → i-1, and
// EmbeddingGrad 0 ↔ S-1 (one each way per step; in a 1-stage pipeline the
// embedding is local and nothing is exchanged).
package scheduler
