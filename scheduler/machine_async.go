package scheduler

import "fmt"

// AsyncMachine is one stage's view of the asynchronous schedule (Async):
// the micro-batches of all steps form one stream, g = step·M + micro, that
// never drains between steps. Like StageMachine it is deterministic: the
// order of every Forward, Backward, Stash, DropVersion and OptimizerStep is
// a function of (S, M, D, stage, steps) alone, never of timing, so every
// transport computes the same losses. A Wait only delays the next action;
// it never reorders.
//
// The order on stage i, with w = D·(S-i-1) warm-up forwards and window
// W = w+1 (MaxInFlight):
//
//   - Forward g while g < steps·M and fewer than W micro-batches are in
//     flight, else Backward the oldest in-flight one. That is 1F1B over the
//     stream: after the warm-up, one forward, one backward.
//   - After the Backward of step s's last micro-batch (plus a lag, below),
//     OptimizerStep{s}: the gradients of all of step s's micro-batches are
//     in. It creates weight version s+1.
//   - A Forward runs with the live version; its Backward runs with the same
//     version (weight stashing). Before an OptimizerStep would overwrite a
//     version that an in-flight micro-batch still needs, Stash copies it;
//     after that version's last Backward, DropVersion frees the copy.
//
// The lag: the first and last stage share the tied embedding and both
// apply the summed gradient (as in the sync schedules). Stage 0 finishes a
// step last, so the last stage would wait a pipeline's worth of time for
// stage 0's embedding gradient. It instead runs Lag() = D·(S-1)+1 more
// backwards (of the next step) before its OptimizerStep: by then stage 0's
// gradient of that step was sent before the activation the last stage just
// used, so in the steady state it has arrived. The price is GradBuffers()
// gradient accumulators on that stage, and staleness there too.
//
// Bounds (tested in machine_async_test.go, derived in docs/async.md):
// stashed versions ≤ StashBound() = ⌈w/M⌉, in-flight micro-batches ≤ W,
// gradient accumulators ≤ GradBuffers() = 1+⌈λ/M⌉, staleness of a step's
// gradient: mean Delay() = (w+λ)/M steps, at most ⌈(w+λ)/M⌉.
type AsyncMachine struct {
	p            Pipeline
	stage, steps int
	start        int // the step the run (re)starts at
	origin       int // the step the stream began at: versions before it do not exist
	n            int // steps·M: micro-batches in the run
	window       int // W = w+1
	lag          int // λ: extra backwards before an OptimizerStep (tied last stage)

	f, b        int  // next forward, next backward (stream index g)
	live        int  // live weight version: OptimizerSteps applied
	nextApply   int  // next step to apply
	stashedLive bool // the live version has been stashed
	stashed     int  // versions stashed now
	drop        int  // version to drop next, -1 if none

	ver  []int  // ver[g%W]: version forward g ran with, g ∈ [b, f)
	act  []bool // act[g%len]: activation g arrived, g ∈ [f, f+len)
	grad []bool // grad[g%W]: gradient g arrived, g ∈ [b, f)
	emb  []bool // emb[s%len]: peer's embedding gradient of step s arrived, s ∈ [nextApply, nextApply+len)
}

// maxStream bounds steps·M so stream indices never overflow.
const maxStream = 1 << 40

// NewAsyncMachine returns the async machine of stage (0-based) of p
// (p.Schedule must be Async) for a run of steps optimizer steps.
func NewAsyncMachine(p Pipeline, stage, steps int) (*AsyncMachine, error) {
	return NewAsyncMachineFrom(p, stage, 0, steps)
}

// NewAsyncMachineFrom is NewAsyncMachine for a run that resumes at step
// first with weight version first (steps 0..first-1 applied on every
// stage: a checkpoint, or the last step every stage applied when the
// pipeline is restarted after a failure). The pipe starts empty and fills
// again, so the first steps after it are less stale than in an
// uninterrupted run; every stage must restart from the same first.
func NewAsyncMachineFrom(p Pipeline, stage, first, steps int) (*AsyncMachine, error) {
	return NewAsyncMachineAt(p, stage, first, first, steps)
}

// NewAsyncMachineAt restarts at step first the stream of a run that began
// at step origin (0, or the step it resumed from a checkpoint at) as if
// the stream had never stopped: every stage redoes all micro-batches of
// steps first and up, and the forwards that refill the pipe run on the
// weight versions the uninterrupted stream gave them (VersionOf, older than
// first), not on version first. So its Forwards, Backwards and
// OptimizerSteps are the uninterrupted machine's from stream micro-batch
// first·M on, in the same order and on the same versions, and a run rolled
// back to a snapshot after a failure computes exactly what it would have
// without the failure. The runtime supplies the older versions (History)
// as stashed copies, kept with the snapshot; the machine drops each after
// its last backward.
func NewAsyncMachineAt(p Pipeline, stage, origin, first, steps int) (*AsyncMachine, error) {
	if err := p.checkStage(stage); err != nil {
		return nil, fmt.Errorf("new async machine: %w", err)
	}
	if p.Schedule != Async {
		return nil, fmt.Errorf("new async machine: schedule %v: use NewStage: %w", p.Schedule, ErrBadShape)
	}
	if steps < 1 || steps > maxStream/p.Micro {
		return nil, fmt.Errorf("new async machine: steps = %d, want 1 ≤ steps ≤ %d: %w", steps, maxStream/p.Micro, ErrBadShape)
	}
	if first < 0 || first >= steps {
		return nil, fmt.Errorf("new async machine: first step = %d, want 0 ≤ first < steps (%d): %w", first, steps, ErrBadShape)
	}
	if origin < 0 || origin > first {
		return nil, fmt.Errorf("new async machine: origin = %d, want 0 ≤ origin ≤ first (%d): %w", origin, first, ErrBadShape)
	}
	W := p.warmup(stage) + 1
	g0 := first * p.Micro
	m := &AsyncMachine{p: p, stage: stage, start: first, origin: origin, steps: steps, n: steps * p.Micro, window: W, drop: -1,
		f: g0, b: g0, live: first, nextApply: first}
	w0 := p.warmup(0) + 1
	if m.tied() && m.last() {
		m.lag = w0
	}
	m.stashed = len(m.History())
	m.ver = make([]int, W)
	m.grad = make([]bool, W)
	if stage > 0 {
		// Stage i-1 has at most W_{i-1} in flight and cannot be ahead of
		// this stage's backwards, so its activations are within
		// [f, f+W_{i-1}).
		m.act = make([]bool, p.warmup(stage-1)+1)
	}
	if m.tied() {
		// Stage 0 receives step s's only after it forwarded the whole step
		// (s ≤ nextApply + W_0/M); the last stage only after it backwarded
		// it (s ≤ nextApply + λ/M).
		m.emb = make([]bool, (w0+m.lag+p.Micro-1)/p.Micro+2)
	}
	return m, nil
}

// Schedule, Stages, Micro, Stage, First and Steps return the machine's
// shape.
func (m *AsyncMachine) Schedule() Schedule { return Async }
func (m *AsyncMachine) Stages() int        { return m.p.Stages }
func (m *AsyncMachine) Micro() int         { return m.p.Micro }
func (m *AsyncMachine) Stage() int         { return m.stage }
func (m *AsyncMachine) First() int         { return m.start }
func (m *AsyncMachine) Steps() int         { return m.steps }

// MaxInFlight is how many activation slots the stage needs: D·(S-stage-1)+1.
func (m *AsyncMachine) MaxInFlight() int { return m.window }

// InFlight is the number of micro-batches forwarded and not yet backwarded.
func (m *AsyncMachine) InFlight() int { return m.f - m.b }

// Version is the live weight version (OptimizerSteps applied so far).
func (m *AsyncMachine) Version() int { return m.live }

// Stashed is the number of weight copies held besides the live weights.
func (m *AsyncMachine) Stashed() int { return m.stashed }

// StashBound is the most weight copies the stage ever holds besides the
// live weights: ⌈w/M⌉ with w = D·(S-stage-1). Why: right after an
// OptimizerStep at most w micro-batches are in flight, consecutive in the
// stream, and versions change every M forwards, so they span at most ⌈w/M⌉
// versions, none of them live. Stage 0 of D=1, M ≥ S-1 keeps one copy
// (PipeDream-2BW's two versions); the last stage keeps none.
func (m *AsyncMachine) StashBound() int { return ceilDiv(m.window-1, m.p.Micro) }

// Lag is how many backwards past a step's last one its OptimizerStep
// waits: D·(S-1)+1 on the last stage of a tied multi-stage pipeline, 0
// elsewhere (see the type's doc).
func (m *AsyncMachine) Lag() int { return m.lag }

// GradBuffers is the most steps whose gradients the stage accumulates at
// once (each in its own buffer, named by Backward's Step): 1+⌈Lag/M⌉.
func (m *AsyncMachine) GradBuffers() int { return 1 + ceilDiv(m.lag, m.p.Micro) }

// Delay is the steady-state staleness of this stage's gradients, in
// optimizer steps, averaged over a step's micro-batches: (w+λ)/M. The
// gradient of micro-batch g, computed on version ver(g), is applied to
// version step(g); step(g) - ver(g) averages (w+λ)/M over a step and is at
// most ⌈(w+λ)/M⌉ (Action.Delay of the OptimizerStep). Give it to the
// optimizer's delay correction (stages.AdamW.Delay).
func (m *AsyncMachine) Delay() float64 { return float64(m.window-1+m.lag) / float64(m.p.Micro) }

// VersionOf is the weight version the forward of stream micro-batch g
// (step·M + micro) runs with: ⌊(g-w-λ)/M⌋, at least the first step. The
// order fixes it: forward g runs right after backward g-W and the
// OptimizerSteps that backward makes due.
func (m *AsyncMachine) VersionOf(g int) int {
	return max(m.origin, floorDiv(g-(m.window-1)-m.lag, m.p.Micro))
}

// Origin is the step the stream began at (NewAsyncMachineAt); First for a
// machine that starts a stream.
func (m *AsyncMachine) Origin() int { return m.origin }

// History lists the weight versions older than First that the refill's
// forwards run on, oldest first: empty for a machine that starts a stream,
// at most ⌈(w+λ)/M⌉ versions after a restart (NewAsyncMachineAt). The
// runtime holds them, as they were, before the first action.
func (m *AsyncMachine) History() []int {
	return m.HistoryAt(m.start)
}

// HistoryAt is History of a restart of this stream at step first: the
// versions a stage must keep (from before first) so that a snapshot of
// step first can be rolled back to exactly.
func (m *AsyncMachine) HistoryAt(first int) []int {
	var out []int
	end := min(m.n, first*m.p.Micro+m.window-1+m.lag)
	for g := first * m.p.Micro; g < end; g++ {
		if v := m.VersionOf(g); v < first && (len(out) == 0 || out[len(out)-1] != v) {
			out = append(out, v)
		}
	}
	return out
}

// fwdVersion is the version forward g runs on: the live one, or in a
// restart's refill the older one the uninterrupted stream used.
func (m *AsyncMachine) fwdVersion(g int) int { return min(m.live, m.VersionOf(g)) }

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func (m *AsyncMachine) first() bool { return m.stage == 0 }
func (m *AsyncMachine) last() bool  { return m.stage == m.p.Stages-1 }
func (m *AsyncMachine) tied() bool  { return m.p.Stages > 1 && (m.first() || m.last()) }
func (m *AsyncMachine) peer() int {
	if m.first() {
		return m.p.Stages - 1
	}
	return 0
}

func (m *AsyncMachine) applyDue() bool {
	return m.nextApply < m.steps && (m.b >= (m.nextApply+1)*m.p.Micro+m.lag || m.b == m.n)
}

// liveInFlight: the newest in-flight micro-batch ran with the live version.
func (m *AsyncMachine) liveInFlight() bool {
	return m.b < m.f && m.ver[(m.f-1)%m.window] == m.live
}

// Next returns what to do now; calling it again without a Step in between
// returns the same action. Priority: drop a freed copy, then an
// OptimizerStep that is due (with its Stash first, and a Wait for the
// peer's embedding gradient), then a Forward if the window allows, then the
// oldest Backward; Done once every step is applied.
func (m *AsyncMachine) Next() Action {
	M := m.p.Micro
	if m.drop >= 0 {
		return Action{Kind: ActionDropVersion, Step: (m.b - 1) / M, Micro: -1, Slot: -1, Version: m.drop}
	}
	if m.applyDue() {
		s := m.nextApply
		if m.liveInFlight() && !m.stashedLive {
			return Action{Kind: ActionStash, Step: s, Micro: -1, Slot: -1, Version: m.live}
		}
		if m.tied() && !m.emb[s%len(m.emb)] {
			return Action{Kind: ActionWait, Step: s, Micro: -1, Slot: -1, WaitFor: MessageEmbeddingGrad}
		}
		return Action{Kind: ActionOptimizerStep, Step: s, Micro: -1, Slot: -1, Version: m.live + 1, Delay: s - m.VersionOf(s*M)}
	}
	if m.f < m.n && m.f-m.b < m.window {
		g := m.f
		if !m.first() && !m.act[g%len(m.act)] {
			return Action{Kind: ActionWait, Step: g / M, Micro: g % M, Slot: -1, WaitFor: MessageActivation}
		}
		return Action{Kind: ActionForward, Step: g / M, Micro: g % M, Slot: g % m.window, Version: m.fwdVersion(g)}
	}
	if m.b < m.f {
		g := m.b
		if !m.last() && !m.grad[g%m.window] {
			return Action{Kind: ActionWait, Step: g / M, Micro: g % M, Slot: -1, WaitFor: MessageGradient}
		}
		return Action{Kind: ActionBackward, Step: g / M, Micro: g % M, Slot: g % m.window, Version: m.ver[g%m.window]}
	}
	return Action{Kind: ActionDone, Step: m.steps - 1, Micro: -1, Slot: -1}
}

// Step feeds an event in. An event the machine cannot accept returns an
// error wrapping ErrBadEvent and leaves the machine unchanged.
func (m *AsyncMachine) Step(ev Event) error {
	var err error
	switch ev.Kind {
	case EventActivationArrived, EventGradientArrived, EventEmbeddingGradArrived:
		err = m.arrive(ev)
	case EventCompleted:
		err = m.complete(ev.Action)
	default:
		err = fmt.Errorf("unknown event kind: %w", ErrBadEvent)
	}
	if err != nil {
		return fmt.Errorf("async stage %d (forwarded %d, backwarded %d, version %d): %v %s: %w",
			m.stage, m.f, m.b, m.live, ev.Kind, eventArgs(ev), err)
	}
	return nil
}

// Duplicate reports whether arrival ev is one the machine already took: a
// message that came before, or whose micro-batch (or step, for an
// embedding gradient) the stage has already used. Each message is sent
// once per attempt, so such a frame is a copy the network made; the
// runtime drops it. Step would refuse it (ErrBadEvent) like a forged one.
func (m *AsyncMachine) Duplicate(ev Event) bool {
	if ev.Step < m.start || ev.Step >= m.steps {
		return false
	}
	M := m.p.Micro
	switch ev.Kind {
	case EventEmbeddingGradArrived:
		if !m.tied() {
			return false
		}
		return ev.Step < m.nextApply || (ev.Step < m.nextApply+len(m.emb) && m.emb[ev.Step%len(m.emb)])
	case EventActivationArrived:
		if m.first() || ev.Micro < 0 || ev.Micro >= M {
			return false
		}
		g := ev.Step*M + ev.Micro
		return g < m.f || (g < m.f+len(m.act) && m.act[g%len(m.act)])
	case EventGradientArrived:
		if m.last() || ev.Micro < 0 || ev.Micro >= M {
			return false
		}
		g := ev.Step*M + ev.Micro
		return g < m.b || (g < m.f && m.grad[g%m.window])
	}
	return false
}

func (m *AsyncMachine) arrive(ev Event) error {
	if ev.Step < m.start || ev.Step >= m.steps {
		return fmt.Errorf("step %d outside the run's [%d,%d): %w", ev.Step, m.start, m.steps, ErrBadEvent)
	}
	if ev.Kind == EventEmbeddingGradArrived {
		if !m.tied() {
			return fmt.Errorf("only the first and last stage of a multi-stage pipeline exchange embedding gradients: %w", ErrBadEvent)
		}
		if ev.Step < m.nextApply || ev.Step >= m.nextApply+len(m.emb) {
			return fmt.Errorf("embedding gradient of step %d, but the stage applies step %d next (accepts up to %d ahead): %w",
				ev.Step, m.nextApply, len(m.emb)-1, ErrBadEvent)
		}
		i := ev.Step % len(m.emb)
		if m.emb[i] {
			return fmt.Errorf("duplicate embedding gradient: %w", ErrBadEvent)
		}
		m.emb[i] = true
		return nil
	}
	M := m.p.Micro
	if ev.Micro < 0 || ev.Micro >= M {
		return fmt.Errorf("micro-batch %d out of range [0,%d): %w", ev.Micro, M, ErrBadEvent)
	}
	g := ev.Step*M + ev.Micro
	if ev.Kind == EventActivationArrived {
		if m.first() {
			return fmt.Errorf("the first stage reads its input from data, not from a previous stage: %w", ErrBadEvent)
		}
		if g < m.f || g >= m.f+len(m.act) {
			return fmt.Errorf("activation of stream micro-batch %d, but the stage forwards %d next and accepts up to %d ahead (duplicate, stale or forged): %w",
				g, m.f, len(m.act)-1, ErrBadEvent)
		}
		i := g % len(m.act)
		if m.act[i] {
			return fmt.Errorf("duplicate message: %w", ErrBadEvent)
		}
		m.act[i] = true
		return nil
	}
	if m.last() {
		return fmt.Errorf("the last stage computes its own gradient from the loss: %w", ErrBadEvent)
	}
	if g < m.b || g >= m.f {
		return fmt.Errorf("gradient of stream micro-batch %d, but only [%d,%d) are in flight (duplicate, stale or forged): %w",
			g, m.b, m.f, ErrBadEvent)
	}
	i := g % m.window
	if m.grad[i] {
		return fmt.Errorf("duplicate message: %w", ErrBadEvent)
	}
	m.grad[i] = true
	return nil
}

func (m *AsyncMachine) complete(a Action) error {
	want := m.Next()
	if !want.Kind.Compute() || a.Kind != want.Kind || a.Step != want.Step || a.Micro != want.Micro || a.Version != want.Version {
		return fmt.Errorf("completed %v (step %d, v%d) but the machine offers %v (v%d): %w", a, a.Step, a.Version, want, want.Version, ErrBadEvent)
	}
	switch a.Kind {
	case ActionForward:
		g := m.f
		m.ver[g%m.window] = m.fwdVersion(g)
		if !m.first() {
			m.act[g%len(m.act)] = false
		}
		m.f++
	case ActionBackward:
		g := m.b
		v := m.ver[g%m.window]
		if !m.last() {
			m.grad[g%m.window] = false
		}
		m.b++
		// Versions never decrease along the stream, so v is still needed
		// only if the next in-flight micro-batch has it, or (in a
		// restart's refill) the next forward.
		if v != m.live && (m.b == m.f || m.ver[m.b%m.window] != v) && (m.f == m.n || m.fwdVersion(m.f) != v) {
			m.drop = v
		}
	case ActionDropVersion:
		m.drop = -1
		m.stashed--
	case ActionStash:
		m.stashedLive = true
		m.stashed++
	case ActionOptimizerStep:
		if m.tied() {
			m.emb[a.Step%len(m.emb)] = false
		}
		m.live++
		m.nextApply++
		m.stashedLive = false
	}
	return nil
}

// Advance always fails: an AsyncMachine has no per-step Done. Its only
// Done (Step = steps-1) means the run is over.
func (m *AsyncMachine) Advance() error {
	return fmt.Errorf("async stage %d: advance: the async schedule is Done once, at the end of the run: %w", m.stage, ErrNotDone)
}

// Sends lists the messages completing a produces, in the order to send
// them: as in StageMachine.Sends, with the tied-embedding gradient of step
// s after the Backward of s's last micro-batch.
func (m *AsyncMachine) Sends(a Action) []Message {
	var out []Message
	switch a.Kind {
	case ActionForward:
		if !m.last() {
			out = append(out, Message{Kind: MessageActivation, Step: a.Step, Micro: a.Micro, From: m.stage, To: m.stage + 1})
		}
	case ActionBackward:
		if !m.first() {
			out = append(out, Message{Kind: MessageGradient, Step: a.Step, Micro: a.Micro, From: m.stage, To: m.stage - 1})
		}
		if m.tied() && a.Micro == m.p.Micro-1 {
			out = append(out, Message{Kind: MessageEmbeddingGrad, Step: a.Step, Micro: -1, From: m.stage, To: m.peer()})
		}
	}
	return out
}
