package scheduler

import (
	"fmt"
	"slices"
	"strings"
)

// Membership decides who holds each stage of a pipeline and what the
// runtime does when a holder or a link fails: a deterministic state machine
// in the style of etcd-raft's RawNode. The runtime feeds it what it
// observes (Step with a Report, Tick once per heartbeat interval) and
// carries out what Ready returns, reporting each command's outcome back. It
// holds no clock, goroutine or connection, so every failure story can be
// replayed as a transcript (testdata/membership_*.txt).
//
// The rules it applies:
//
//   - A holder heard from for no Config.TimeoutTicks ticks, or whose
//     control link broke, is dead. A holder that sent Config.MaxRejects bad
//     frames is evicted (and killed, in case it still runs).
//   - Any failure interrupts the attempt in progress: every live holder
//     aborts it (a new epoch: frames and replies of the old one are stale).
//   - A dead or evicted holder's stage goes to a spare (the first, by name,
//     that joined and has not failed); with none, the runtime waits for one
//     to join. Where stages cannot change hands (Config.CanHandOver false)
//     the run fails, saying so.
//   - A failed link between two live holders is re-established, as often
//     as it takes: its ends stay alive meanwhile, however long the cut.
//   - Then the interrupted operation is redone — unless a stage changed
//     hands or an optimizer step may already have been applied, in which
//     case every stage is restored to the latest snapshot and the run goes
//     back to its step. Snapshots are taken every Config.SnapshotEvery
//     steps, where stages can change hands.
//
// A failure reported while another is being handled joins it: the plan is
// recomputed from everything known so far (vacant stages, broken links),
// and the outstanding command is moot.
type Membership struct {
	cfg     MembershipConfig
	reps    [][]string // stage → its replicas' holders, in the order they were admitted; empty while vacant
	spares  []string   // joined peers, sorted; holders and failed peers included
	failed  map[string]bool
	rejects map[string]int // bad frames per holder
	// mismatches are failed spot checks per holder.
	mismatches map[string]int
	silent     map[string]int // ticks since each holder was last heard
	swarm      swarm          // replicas joining, leaving and being demoted (membership_swarm.go)
	epoch      uint64
	snap       int // step of the latest snapshot, -1 if none
	counts     MembershipCounts

	rec     *recovery // the failure being handled; nil when training
	nextID  int
	ready   Ready // what the next Ready call returns
	waiting map[int]bool
}

// MembershipConfig is what the machine knows of a run.
type MembershipConfig struct {
	Layout Layout
	// Holders names who holds each stage at the start.
	Holders []string
	// TimeoutTicks: a holder heard from for no this many consecutive
	// ticks is dead (faults.peer_timeout over faults.heartbeat, rounded
	// up).
	TimeoutTicks int
	// MaxRejects: bad frames a holder may send before it is evicted.
	MaxRejects int
	// SnapshotEvery: steps between snapshots (where stages can change
	// hands; elsewhere there is nobody to hand a stage to and no
	// snapshot is needed).
	SnapshotEvery int
	// CanHandOver: whether a failed stage can go to a spare (WebRTC
	// rooms); otherwise a dead or evicted holder ends the run.
	CanHandOver bool
	// Async: the pipeline never flushes (the async schedule), so its
	// stages are always in the middle of optimizer steps, several steps
	// apart: no failure can be redone in place. Every recovery restores
	// the snapshot and rolls back to it, and snapshots are taken wherever
	// the run can fail (a bad frame or a cut link too), not only where
	// stages change hands.
	Async bool

	// Replicas lists each stage's further replicas at the start, beside
	// Holders' first ones (nil: one replica per stage).
	Replicas [][]string
	// Join places peers that join a running run on the stage that needs
	// them most (synced from a live replica, admitted at a step
	// boundary); without it they wait as spares.
	Join bool
	// KeepSpares (with Join): this many peers that join wait as spares
	// instead, to take a stage whose last replica is lost; the ones
	// beyond are placed.
	KeepSpares int
	// SlowFraction and SlowSteps: a replica below SlowFraction of its
	// stage's median rate for SlowSteps reports gets half the
	// micro-batches; as long again, it is dropped back to the spares.
	// 0 disables.
	SlowFraction float64
	SlowSteps    int
	// RouteByRate routes micro-batches by the replicas' measured rates
	// (SWARM-style) instead of round-robin; runs are then not
	// reproducible bit for bit.
	RouteByRate bool
	// MaxMismatches: failed spot checks (verify.max_mismatches) a replica
	// may have before it is evicted; 0 reads as 1.
	MaxMismatches int
}

// MembershipCounts are the machine's tallies, for the run's summary.
type MembershipCounts struct {
	Failures       int // holders dead or evicted, links restored
	Recoveries     int // stages handed over, links restored
	RejectedFrames int
	StepsRedone    int // attempts redone, plus steps rolled back over
	Joins          int // replicas admitted to a running run
	Leaves         int // replicas that left cleanly
	Drops          int // replicas dropped for being slow
	ReplicasLost   int // replicas that died while their stage had others
}

// recovery is the failure being handled.
type recovery struct {
	step     int  // the step the interrupted operation was at
	rollback bool // a stage changed hands
	applied  bool // an optimizer step may have run
	// lostReplicas died while their stage had others; other says a
	// failure of another kind joined them (so an applied step must be
	// rolled back, not kept).
	lostReplicas []string
	other        bool
	vacant       []int // stages without a holder, sorted
	links        [][2]int
	kill         []string // evicted holders still to stop
	needAbort    bool
	cmd          *Command // the outstanding command
	failed       []string // why the run stops, if it does
}

// ReportKind says what a Report is.
type ReportKind int

const (
	ReportUnknown ReportKind = iota
	// ReportStepBegins: step Step is about to run (the machine may want a
	// snapshot first).
	ReportStepBegins
	// ReportSnapshot: the runtime now holds a snapshot of every stage at
	// step Step (after a CmdSnapshot, or a run resumed from a file).
	ReportSnapshot
	// ReportHeard: a message arrived from Stage's holder (a heartbeat or
	// a reply) since the last Tick.
	ReportHeard
	// ReportLost: Stage's control link closed or broke: its holder is gone.
	ReportLost
	// ReportLinkDown: Stage found its link to stage Peer silent or broken.
	ReportLinkDown
	// ReportRejected: Stage rejected a bad frame from stage Peer.
	ReportRejected
	// ReportInterrupted: the runtime stopped its operation because the
	// machine had found a failure (Ready has a command).
	ReportInterrupted
	// ReportDone: command Cmd was carried out.
	ReportDone
	// ReportSpareFailed: spare Holder could not be reached or set up.
	ReportSpareFailed
	// ReportJoined: Holder joined the run and waits as a spare.
	ReportJoined
	// ReportLeft: Holder asks to leave (dropped at the next step).
	ReportLeft
	// ReportRate: Holder computed at Rate micro-batches per second of
	// compute in the last step.
	ReportRate
	// ReportSyncFailed: Holder's download of its stage's state broke.
	ReportSyncFailed
	// ReportMismatch: a spot check of Holder, a replica of Stage, failed
	// (another replica's recomputation of one of its outputs differs
	// from what it sent): the attempt is redone, and Holder is evicted
	// after MaxMismatches of them.
	ReportMismatch
)

var reportNames = [...]string{"unknown", "step", "snapshot", "heard", "lost", "link-down", "rejected", "interrupted", "done", "spare-failed", "joined", "left", "rate", "sync-failed", "mismatch"}

func (k ReportKind) String() string {
	if int(k) < len(reportNames) {
		return reportNames[k]
	}
	return fmt.Sprintf("ReportKind(%d)", int(k))
}

// Report is what the runtime observed.
type Report struct {
	Kind   ReportKind
	Stage  int
	Peer   int    // ReportLinkDown, ReportRejected: the other stage
	Holder string // ReportSpareFailed, ReportJoined
	Cmd    int    // ReportDone: the command's ID
	// Step is the step the operation in progress was at (failures,
	// ReportInterrupted, ReportStepBegins, ReportSnapshot).
	Step int
	// Applied: the operation in progress may have applied an optimizer
	// step on some stage (failures, ReportInterrupted).
	Applied bool
	Rate    float64 // ReportRate
	Err     string  // what the runtime saw, for the notes
}

// CommandKind says what a Command asks for.
type CommandKind int

const (
	CmdUnknown CommandKind = iota
	// CmdSnapshot: gather every stage's weights and optimizer state at
	// step Step before running it; report ReportSnapshot.
	CmdSnapshot
	// CmdAbort: start epoch Epoch on every holder but those of the
	// stages in Skip, and wait until each has dropped the attempt.
	CmdAbort
	// CmdRelink: stages Stage and Peer re-establish their link, Holders
	// naming every stage's holder.
	CmdRelink
	// CmdKill: stop Holder at once (evicted for bad data).
	CmdKill
	// CmdWait: stage Stage has no holder and no spare is known: look for
	// peers that join (report ReportJoined) and say the run waits.
	CmdWait
	// CmdHandOver: make spare Holder the holder of Stage: connect to it,
	// have the stage's Neighbours relink to it, set it up with Holders
	// (the holders after the change), and wait for the neighbours.
	CmdHandOver
	// CmdRestore: load the snapshot of step Step on every stage.
	CmdRestore
	// CmdRedo: recovery is over; run the interrupted operation again.
	CmdRedo
	// CmdRollback: recovery is over; the run goes back to step Step
	// (0-based: the next step to run).
	CmdRollback
	// CmdFail: the run cannot go on: Err.
	CmdFail
	// CmdSync (background): joiner Holder downloads stage Stage's weights
	// and optimizer state from replica Holders[0] (Err "resume": go on
	// from where a broken download stopped); report ReportDone, or
	// ReportSyncFailed.
	CmdSync
	// CmdAdmit: from this step on, Holder is a replica of Stage (Holders:
	// the stage's replicas now); routing and averaging include it.
	CmdAdmit
	// CmdDrop: Holder is no longer a replica of Stage (Err says why:
	// "left", or slow); routing and averaging leave it out; it may go.
	CmdDrop
	// CmdContinue: recovery is over; the interrupted step stands (its
	// optimizer step ran on every surviving replica): finish it without
	// the replicas lost.
	CmdContinue
)

var commandNames = [...]string{"unknown", "snapshot", "abort", "relink", "kill", "wait", "hand-over", "restore", "redo", "rollback", "fail", "sync", "admit", "drop", "continue"}

func (k CommandKind) String() string {
	if int(k) < len(commandNames) {
		return commandNames[k]
	}
	return fmt.Sprintf("CommandKind(%d)", int(k))
}

// Command is one thing for the runtime to do. Commands other than
// CmdRedo, CmdRollback and CmdFail are answered with ReportDone (or with
// the failure that stopped them).
type Command struct {
	ID         int
	Kind       CommandKind
	Stage      int
	Peer       int
	Step       int
	Epoch      uint64
	Skip       []int
	Holder     string
	Holders    []string
	Neighbours []int
	Err        string
}

func (c Command) String() string {
	switch c.Kind {
	case CmdSnapshot, CmdRestore, CmdRollback:
		return fmt.Sprintf("%v step %d", c.Kind, c.Step)
	case CmdAbort:
		s := fmt.Sprintf("abort epoch %d", c.Epoch)
		if len(c.Skip) > 0 {
			s += fmt.Sprintf(" skip %v", c.Skip)
		}
		return s
	case CmdRelink:
		return fmt.Sprintf("relink %d-%d", c.Stage, c.Peer)
	case CmdKill:
		return "kill " + c.Holder
	case CmdWait:
		return fmt.Sprintf("wait for a peer for stage %d", c.Stage)
	case CmdHandOver:
		hs := slices.Clone(c.Holders)
		for i, h := range hs {
			if h == "" {
				hs[i] = "(vacant)"
			}
		}
		return fmt.Sprintf("hand-over stage %d to %s (neighbours %v, holders %s)", c.Stage, c.Holder, c.Neighbours, strings.Join(hs, ","))
	case CmdFail:
		return "fail: " + c.Err
	case CmdSync:
		s := fmt.Sprintf("sync %s for stage %d from %s", c.Holder, c.Stage, c.Holders[0])
		if c.Err != "" {
			s += " (" + c.Err + ")"
		}
		return s
	case CmdAdmit:
		return fmt.Sprintf("admit %s to stage %d (replicas %s)", c.Holder, c.Stage, strings.Join(c.Holders, ","))
	case CmdDrop:
		return fmt.Sprintf("drop %s from stage %d (%s; replicas %s)", c.Holder, c.Stage, c.Err, strings.Join(c.Holders, ","))
	}
	return c.Kind.String()
}

// NoteKind says what a Note records.
type NoteKind int

const (
	NoteUnknown      NoteKind = iota
	NoteRejected              // Stage rejected a frame from Peer; Count so far from its holder
	NoteLinkFailure           // Stage's link to Peer failed
	NoteLinkRestored          // the link Stage-Peer carries traffic again
	NoteDead                  // Holder of Stage is dead
	NoteEvicted               // Holder of Stage is evicted
	NoteWaiting               // Stage has no holder and no spare: the run waits
	NoteReplaced              // Holder now holds Stage
	NoteRolledBack            // every stage went back to the snapshot of step Step
	NoteReplicaLost           // Holder, one of Stage's replicas, died; the others go on
	NoteJoining               // Holder syncs to join Stage
	NoteSynced                // Holder has Stage's state
	NoteSyncBroke             // Holder's download broke (Err); it goes on from another replica
	NoteJoined                // Holder is a replica of Stage from this step on
	NoteLeft                  // Holder left Stage cleanly
	NoteDropped               // Holder was dropped from Stage (Err: why)
	NoteDemoted               // Holder gets fewer micro-batches (Err: why)
	NoteMismatch              // a spot check of Holder on Stage failed; Count so far
)

var noteNames = [...]string{"unknown", "frame_rejected", "link_failure", "link_restored", "peer_dead", "evicted", "waiting_for_peer", "stage_replaced", "rolled_back",
	"replica_lost", "replica_joining", "replica_synced", "sync_broke", "replica_joined", "replica_left", "replica_dropped", "replica_demoted", "verify_mismatch"}

// String is the note's event name in metrics.jsonl.
func (k NoteKind) String() string {
	if int(k) < len(noteNames) {
		return noteNames[k]
	}
	return fmt.Sprintf("NoteKind(%d)", int(k))
}

// Note is something worth recording that the machine decided or learned;
// the runtime stamps it with the time and writes it as an event.
type Note struct {
	Kind   NoteKind
	Stage  int
	Peer   int
	Holder string
	Step   int // the step of the interrupted operation (NoteRolledBack: the snapshot's)
	Count  int
	Err    string
}

func (n Note) String() string {
	switch n.Kind {
	case NoteRejected:
		return fmt.Sprintf("%v stage %d from %d (%d from its holder)", n.Kind, n.Stage, n.Peer, n.Count)
	case NoteLinkFailure, NoteLinkRestored:
		return fmt.Sprintf("%v %d-%d", n.Kind, n.Stage, n.Peer)
	case NoteDead, NoteEvicted, NoteReplaced:
		return fmt.Sprintf("%v stage %d %s", n.Kind, n.Stage, n.Holder)
	case NoteWaiting:
		return fmt.Sprintf("%v stage %d", n.Kind, n.Stage)
	case NoteRolledBack:
		return fmt.Sprintf("%v to step %d", n.Kind, n.Step)
	case NoteReplicaLost, NoteJoining, NoteSynced, NoteJoined, NoteLeft:
		return fmt.Sprintf("%v stage %d %s", n.Kind, n.Stage, n.Holder)
	case NoteMismatch:
		return fmt.Sprintf("%v stage %d %s (%d so far): %s", n.Kind, n.Stage, n.Holder, n.Count, n.Err)
	case NoteSyncBroke, NoteDropped, NoteDemoted:
		return fmt.Sprintf("%v stage %d %s: %s", n.Kind, n.Stage, n.Holder, n.Err)
	}
	return n.Kind.String()
}

// Ready is what the runtime must do now: record the notes, then carry out
// the commands in order, reporting each outcome before the next Ready.
type Ready struct {
	Notes    []Note
	Commands []Command
	// Background commands run beside training (a joiner's sync): start
	// them, do not wait for them; report how they end.
	Background []Command
}

// Empty reports whether there is nothing to do.
func (r Ready) Empty() bool {
	return len(r.Notes) == 0 && len(r.Commands) == 0 && len(r.Background) == 0
}

// NewMembership returns the machine for a pipeline whose stages are held
// as c.Holders says.
func NewMembership(c MembershipConfig) (*Membership, error) {
	S := c.Layout.Stages()
	switch {
	case S < 1:
		return nil, fmt.Errorf("membership: no stages: %w", ErrBadShape)
	case len(c.Holders) != S:
		return nil, fmt.Errorf("membership: %d holders for %d stages: %w", len(c.Holders), S, ErrBadShape)
	case c.TimeoutTicks < 1 || c.MaxRejects < 1 || c.SnapshotEvery < 1:
		return nil, fmt.Errorf("membership: timeout %d ticks, max rejects %d, snapshot every %d steps: each must be at least 1: %w", c.TimeoutTicks, c.MaxRejects, c.SnapshotEvery, ErrBadShape)
	}
	seen := map[string]bool{}
	for i, h := range c.Holders {
		if h == "" || seen[h] {
			return nil, fmt.Errorf("membership: holder %q of stage %d is empty or holds two stages: %w", h, i, ErrBadShape)
		}
		seen[h] = true
	}
	if len(c.Replicas) > S {
		return nil, fmt.Errorf("membership: replicas for %d stages of %d: %w", len(c.Replicas), S, ErrBadShape)
	}
	for i, extra := range c.Replicas {
		for _, h := range extra {
			if h == "" || seen[h] {
				return nil, fmt.Errorf("membership: replica %q of stage %d is empty or holds two stages: %w", h, i, ErrBadShape)
			}
			seen[h] = true
		}
	}
	if c.SlowFraction < 0 || c.SlowFraction >= 1 || (c.SlowFraction > 0 && c.SlowSteps < 1) {
		return nil, fmt.Errorf("membership: slow fraction %g over %d steps: want a fraction in [0, 1) and at least one step: %w", c.SlowFraction, c.SlowSteps, ErrBadShape)
	}
	reps := make([][]string, S)
	for i, h := range c.Holders {
		reps[i] = []string{h}
	}
	for i, extra := range c.Replicas {
		if i < S {
			reps[i] = append(reps[i], extra...)
		}
	}
	return &Membership{
		cfg: c, reps: reps, failed: map[string]bool{}, rejects: map[string]int{}, mismatches: map[string]int{},
		silent: map[string]int{}, snap: -1, waiting: map[int]bool{}, swarm: newSwarm(),
	}, nil
}

// Holders names who holds each stage ("" for a vacant stage).
func (m *Membership) Holders() []string {
	out := make([]string, len(m.reps))
	for i, r := range m.reps {
		if len(r) > 0 {
			out[i] = r[0]
		}
	}
	return out
}

// Replicas names every replica of every stage, in admission order.
func (m *Membership) Replicas() [][]string {
	out := make([][]string, len(m.reps))
	for i, r := range m.reps {
		out[i] = slices.Clone(r)
	}
	return out
}

// stageOf is the stage holder holds, -1 if none.
func (m *Membership) stageOf(holder string) int {
	for i, r := range m.reps {
		if slices.Contains(r, holder) {
			return i
		}
	}
	return -1
}

// holds reports whether id holds a replica of any stage.
func (m *Membership) holds(id string) bool { return m.stageOf(id) >= 0 }

// Spares lists the peers waiting to take a stage, by name.
func (m *Membership) Spares() []string {
	var out []string
	for _, id := range m.spares {
		if !m.failed[id] && !m.holds(id) && !m.swarm.busy(id) {
			out = append(out, id)
		}
	}
	return out
}

// Failed lists the peers that died or were evicted, by name.
func (m *Membership) Failed() []string {
	var out []string
	for id := range m.failed {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Knows reports whether the machine has heard of peer id (as a holder, a
// spare or a failed peer).
func (m *Membership) Knows(id string) bool {
	return m.holds(id) || slices.Contains(m.spares, id) || m.failed[id] || m.swarm.busy(id)
}

// Epoch is the current attempt's number: every abort starts a new one.
func (m *Membership) Epoch() uint64 { return m.epoch }

// Counts are the tallies so far.
func (m *Membership) Counts() MembershipCounts { return m.counts }

// Recovering reports whether a failure is being handled.
func (m *Membership) Recovering() bool { return m.rec != nil }

// HasReady reports whether Ready has anything.
func (m *Membership) HasReady() bool { return !m.ready.Empty() }

// Pending reports whether the runtime must stop what it is doing: a tick
// found a failure during its operation (Interrupting), or a failure
// replaced the command it is carrying out (Ready has a new one).
func (m *Membership) Pending() bool {
	return len(m.ready.Commands) > 0 || m.Interrupting()
}

// Interrupting reports whether a tick found a failure while the runtime
// ran an operation of its own: it stops the operation and reports
// ReportInterrupted with its step.
func (m *Membership) Interrupting() bool { return m.rec != nil && m.rec.step < 0 }

// Ready returns what to do now and forgets it.
func (m *Membership) Ready() Ready {
	rd := m.ready
	m.ready = Ready{}
	return rd
}

// Tick says one heartbeat interval passed. A holder heard from in none of
// the last TimeoutTicks intervals is dead.
func (m *Membership) Tick() {
	for i := range m.reps {
		for _, h := range slices.Clone(m.reps[i]) {
			m.silent[h]++
			if m.silent[h] >= m.cfg.TimeoutTicks {
				m.silent[h] = 0
				m.fail(failure{kind: failDead, stage: i, holder: h, err: fmt.Sprintf("silent for %d heartbeats", m.cfg.TimeoutTicks)})
			}
		}
	}
}

// Step feeds a report in.
func (m *Membership) Step(r Report) error {
	S := m.cfg.Layout.Stages()
	if r.Kind != ReportJoined && r.Kind != ReportSpareFailed && r.Kind != ReportDone && r.Kind != ReportLeft && r.Kind != ReportRate && r.Kind != ReportSyncFailed && (r.Stage < 0 || r.Stage >= S) {
		return fmt.Errorf("membership: %v report for stage %d of %d: %w", r.Kind, r.Stage, S, ErrBadEvent)
	}
	if (r.Kind == ReportLinkDown || r.Kind == ReportRejected) && (r.Peer < 0 || r.Peer >= S || r.Peer == r.Stage) {
		return fmt.Errorf("membership: %v report from stage %d about stage %d: %w", r.Kind, r.Stage, r.Peer, ErrBadEvent)
	}
	switch r.Kind {
	case ReportStepBegins:
		if m.rec == nil {
			m.boundary(r.Step)
		}
		if (m.cfg.CanHandOver || m.cfg.Async) && m.rec == nil && (m.snap < 0 || (r.Step%m.cfg.SnapshotEvery == 0 && m.snap != r.Step)) {
			m.issue(Command{Kind: CmdSnapshot, Step: r.Step})
		}
	case ReportSnapshot:
		m.snap = r.Step
	case ReportHeard:
		m.silent[m.holderOf(r)] = 0
	case ReportLost:
		m.begin(r)
		m.fail(failure{kind: failDead, stage: r.Stage, holder: m.holderOf(r), err: r.Err})
	case ReportMismatch:
		m.begin(r)
		m.fail(failure{kind: failMismatch, stage: r.Stage, holder: r.Holder, err: r.Err})
	case ReportLinkDown:
		m.begin(r)
		m.fail(failure{kind: failLink, stage: r.Stage, peer: r.Peer, err: r.Err})
	case ReportRejected:
		m.begin(r)
		m.fail(failure{kind: failReject, stage: r.Stage, peer: r.Peer, err: r.Err})
	case ReportInterrupted:
		m.begin(r)
		m.plan()
	case ReportDone:
		if c, ok := m.swarm.bg[r.Cmd]; ok {
			m.backgroundDone(*c)
			return nil
		}
		if m.rec == nil || m.rec.cmd == nil || m.rec.cmd.ID != r.Cmd {
			return nil // moot (a later failure replaced the plan), or a step-boundary command
		}
		m.done(*m.rec.cmd)
	case ReportSpareFailed:
		m.failed[r.Holder] = true
		if m.rec != nil {
			m.rec.needAbort = true // the neighbours may be relinking to it
			m.plan()
		}
	case ReportJoined:
		if r.Holder == "" {
			return fmt.Errorf("membership: a peer joined without a name: %w", ErrBadEvent)
		}
		if !m.Knows(r.Holder) {
			m.spares = append(m.spares, r.Holder)
			slices.Sort(m.spares)
		}
		if m.rec != nil && m.rec.cmd != nil && m.rec.cmd.Kind == CmdWait {
			m.plan()
		} else {
			m.join(r.Holder)
		}
	case ReportLeft:
		m.leave(r.Holder)
	case ReportRate:
		m.rate(r.Holder, r.Rate)
	case ReportSyncFailed:
		m.syncFailed(r.Holder, r.Err)
	default:
		return fmt.Errorf("membership: report %v: %w", r.Kind, ErrBadEvent)
	}
	return nil
}

// begin starts (or joins) the handling of a failure reported by the
// operation at r.Step.
func (m *Membership) begin(r Report) {
	if m.rec == nil {
		m.rec = &recovery{step: -1}
	}
	rec := m.rec
	if rec.step < 0 {
		// A failure a tick found before the runtime said which
		// operation it interrupted: its notes get the step now.
		rec.step = r.Step
		for i := range m.ready.Notes {
			if m.ready.Notes[i].Step < 0 {
				m.ready.Notes[i].Step = r.Step
			}
		}
	}
	rec.applied = rec.applied || r.Applied || m.cfg.Async
	rec.needAbort = true
}

type failKind int

const (
	failDead failKind = iota + 1
	failEvict
	failLink
	failReject
	failMismatch
)

type failure struct {
	kind        failKind
	stage, peer int
	holder      string // dead/evict: which replica of stage; "" for its first
	sender      string // reject: which replica of peer sent the bad frame; "" for its first
	err         string
}

// fail records a failure and replans (once the step of the interrupted
// operation is known).
func (m *Membership) fail(f failure) {
	if m.rec == nil {
		// Found by a tick: the runtime stops its operation and reports
		// ReportInterrupted with the step.
		m.rec = &recovery{step: -1}
	}
	rec := m.rec
	rec.needAbort = true
	if f.kind == failReject || f.kind == failLink {
		rec.other = true
	}
	switch f.kind {
	case failReject:
		holder := f.sender
		if holder == "" && len(m.reps[f.peer]) > 0 {
			holder = m.reps[f.peer][0]
		}
		if holder == "" || m.stageOf(holder) != f.peer {
			break // its stage is already being handed over, or it left
		}
		m.counts.RejectedFrames++
		m.rejects[holder]++
		n := m.rejects[holder]
		m.note(Note{Kind: NoteRejected, Stage: f.stage, Peer: f.peer, Holder: holder, Count: n, Err: f.err})
		if n >= m.cfg.MaxRejects {
			m.fail(failure{kind: failEvict, stage: f.peer, holder: holder, err: fmt.Sprintf("%d bad frames (faults.max_rejects = %d)", n, m.cfg.MaxRejects)})
			return
		}
	case failMismatch:
		if f.holder == "" || m.stageOf(f.holder) != f.stage {
			break // already gone
		}
		rec.other = true
		m.mismatches[f.holder]++
		n := m.mismatches[f.holder]
		m.note(Note{Kind: NoteMismatch, Stage: f.stage, Holder: f.holder, Count: n, Err: f.err})
		if limit := max(m.cfg.MaxMismatches, 1); n >= limit {
			m.fail(failure{kind: failEvict, stage: f.stage, holder: f.holder, err: fmt.Sprintf("%d failed spot checks (verify.max_mismatches = %d)", n, limit)})
			return
		}
	case failLink:
		if len(m.reps[f.stage]) == 0 || len(m.reps[f.peer]) == 0 {
			break // a link to a vacant stage is the hand-over's to restore
		}
		m.note(Note{Kind: NoteLinkFailure, Stage: f.stage, Peer: f.peer, Err: f.err})
		p := [2]int{min(f.stage, f.peer), max(f.stage, f.peer)}
		if !slices.Contains(rec.links, p) {
			rec.links = append(rec.links, p)
		}
	case failDead, failEvict:
		holder := f.holder
		if holder == "" && len(m.reps[f.stage]) > 0 {
			holder = m.reps[f.stage][0]
		}
		if holder == "" || m.stageOf(holder) != f.stage {
			break // already gone
		}
		m.counts.Failures++
		kind, verb := NoteDead, "died"
		if f.kind == failEvict {
			kind, verb = NoteEvicted, "was evicted"
		}
		if len(m.reps[f.stage]) > 1 {
			// One of several replicas: the others hold the stage.
			if f.kind == failDead {
				kind = NoteReplicaLost
			}
			m.note(Note{Kind: kind, Stage: f.stage, Holder: holder, Err: f.err})
			m.counts.ReplicasLost++
			if f.kind == failEvict && m.cfg.CanHandOver {
				rec.kill = append(rec.kill, holder)
			}
			m.failed[holder] = true
			delete(m.silent, holder)
			m.reps[f.stage] = slices.DeleteFunc(m.reps[f.stage], func(h string) bool { return h == holder })
			rec.lostReplicas = append(rec.lostReplicas, holder)
			m.swarm.forget(holder)
			break
		}
		rec.other = true
		m.note(Note{Kind: kind, Stage: f.stage, Holder: holder, Err: f.err})
		if !m.cfg.CanHandOver {
			rec.failed = append(rec.failed, fmt.Sprintf("stage %d's peer %s %s (%s); only WebRTC runs (pipeline.transport = \"webrtc\") can hand a stage to a spare peer", f.stage, holder, verb, f.err))
			break
		}
		if f.kind == failEvict {
			rec.kill = append(rec.kill, holder)
		}
		m.failed[holder] = true
		delete(m.silent, holder)
		m.reps[f.stage] = nil
		m.swarm.forget(holder)
		rec.vacant = append(rec.vacant, f.stage)
		slices.Sort(rec.vacant)
		rec.rollback = true
		// Links to the vacant stage are the hand-over's to restore.
		rec.links = slices.DeleteFunc(rec.links, func(p [2]int) bool { return p[0] == f.stage || p[1] == f.stage })
	}
	if rec.step >= 0 {
		m.plan()
	}
}

// plan issues the next command of the recovery in progress, replacing the
// outstanding one.
func (m *Membership) plan() {
	rec := m.rec
	rec.cmd = nil
	switch {
	case len(rec.failed) > 0:
		m.finish(Command{Kind: CmdFail, Err: strings.Join(rec.failed, "; ")})
	case len(rec.kill) > 0:
		m.issue(Command{Kind: CmdKill, Holder: rec.kill[0]})
	case rec.needAbort:
		m.epoch++
		m.issue(Command{Kind: CmdAbort, Epoch: m.epoch, Skip: slices.Clone(rec.vacant)})
	case len(rec.vacant) > 0:
		stage := rec.vacant[0]
		spares := m.Spares()
		if len(spares) == 0 {
			if !m.waiting[stage] {
				m.waiting[stage] = true
				m.note(Note{Kind: NoteWaiting, Stage: stage})
			}
			m.issue(Command{Kind: CmdWait, Stage: stage})
			return
		}
		holders := m.Holders()
		holders[stage] = spares[0]
		// Vacant neighbours link to the spare when their own hand-over
		// comes.
		var nb []int
		for _, j := range m.cfg.Layout.Neighbours(stage) {
			if len(m.reps[j]) > 0 {
				nb = append(nb, j)
			}
		}
		m.issue(Command{Kind: CmdHandOver, Stage: stage, Holder: spares[0], Holders: holders, Neighbours: nb})
	case len(rec.links) > 0:
		p := rec.links[0]
		m.issue(Command{Kind: CmdRelink, Stage: p[0], Peer: p[1], Holders: m.Holders()})
	case rec.mustRollBack() && m.snap < 0:
		m.finish(Command{Kind: CmdFail, Err: "a stage may have applied its optimizer step, and there is no snapshot to roll back to"})
	case rec.mustRollBack():
		m.issue(Command{Kind: CmdRestore, Step: m.snap})
	case rec.applied:
		// Only replicas of replicated stages were lost after the
		// optimizer step: every survivor applied it, the step stands.
		m.finish(Command{Kind: CmdContinue, Step: rec.step})
	default:
		m.counts.StepsRedone++
		m.finish(Command{Kind: CmdRedo, Step: rec.step})
	}
}

// mustRollBack reports whether the stages must go back to the snapshot: a
// stage changed hands, or an optimizer step may have run somewhere while
// something else than replicas of replicated stages failed.
func (rec *recovery) mustRollBack() bool {
	return rec.rollback || (rec.applied && (rec.other || len(rec.lostReplicas) == 0))
}

// done moves the recovery on after command c was carried out.
func (m *Membership) done(c Command) {
	rec := m.rec
	switch c.Kind {
	case CmdSnapshot:
		return
	case CmdKill:
		rec.kill = rec.kill[1:]
	case CmdAbort:
		rec.needAbort = false
	case CmdHandOver:
		m.reps[c.Stage] = []string{c.Holder}
		m.silent[c.Holder] = 0
		delete(m.waiting, c.Stage)
		rec.vacant = slices.DeleteFunc(rec.vacant, func(s int) bool { return s == c.Stage })
		m.counts.Recoveries++
		m.note(Note{Kind: NoteReplaced, Stage: c.Stage, Holder: c.Holder})
	case CmdRelink:
		rec.links = rec.links[1:]
		// Counted once restored: a link that fails because its peer
		// died is that peer's failure.
		m.counts.Failures++
		m.counts.Recoveries++
		m.note(Note{Kind: NoteLinkRestored, Stage: c.Stage, Peer: c.Peer})
	case CmdRestore:
		m.counts.StepsRedone += max(rec.step-m.snap, 0)
		m.note(Note{Kind: NoteRolledBack, Step: m.snap})
		m.finish(Command{Kind: CmdRollback, Step: m.snap})
		return
	}
	m.plan()
}

// issue queues c as the outstanding command.
func (m *Membership) issue(c Command) {
	m.nextID++
	c.ID = m.nextID
	if m.rec != nil {
		m.rec.cmd = &c
	}
	m.ready.Commands = append(m.ready.Commands, c)
}

// finish ends the recovery with c (redo, rollback or fail).
func (m *Membership) finish(c Command) {
	if c.Kind != CmdFail {
		c.Step = max(c.Step, 0)
	}
	m.rec = nil
	m.issue(c)
}

func (m *Membership) note(n Note) {
	if m.rec != nil && n.Kind != NoteRolledBack {
		n.Step = m.rec.step
	}
	m.ready.Notes = append(m.ready.Notes, n)
}
