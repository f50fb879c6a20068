package scheduler

import "fmt"

// Machine is what the runtime and the simulator drive, whatever the
// schedule: StageMachine (GPipe, 1F1B) and AsyncMachine. The loop is the
// one in the package doc; Advance is only called on a Done whose step is
// not the run's last (an AsyncMachine is Done once, at the end of the run).
type Machine interface {
	Next() Action
	Step(Event) error
	Advance() error
	Sends(Action) []Message
	MaxInFlight() int
	InFlight() int
}

// NewMachine returns the machine for stage of p, for a run of steps
// optimizer steps: a StageMachine for GPipe and 1F1B (which does not need
// steps: the runtime stops advancing it), an AsyncMachine for Async
// (which must know where the stream ends to drain it).
func NewMachine(p Pipeline, stage, steps int) (Machine, error) {
	if p.Schedule == Async {
		return NewAsyncMachine(p, stage, steps)
	}
	return NewStage(p, stage)
}

// StageMachine is one stage's view of the pipeline schedule: a deterministic
// state machine the runtime (or the simulator) drives with Next, Step and
// Advance. It holds no tensors and does no I/O; see the package doc for the
// driving loop.
//
// It runs steps one after another. Messages of the next step may arrive
// before the current step is Done (the upstream stage can finish its
// optimizer step and start forwarding earlier); they are kept until Advance.
type StageMachine struct {
	kind                 Schedule
	stages, micro, stage int
	window               int      // MaxInFlight
	order                []Action // compute order of one step, Step = 0
	spec                 Pipeline // what the machine was built for (RestrictLane rebuilds its order)
	full                 []Action // the whole stage's order, once Restrict narrowed order
	routed               bool     // Restrict: the runtime exchanges the tied gradient itself

	step int
	pos  int // index into order; len(order) = optimizer next; len(order)+1 = done

	// Arrivals for step and step+1, indexed by step&1. Flags stay set until
	// Advance, so duplicates are detected.
	act, grad [2][]bool
	emb       [2]bool

	inFlight int // forwards completed whose backward has not completed
}

// NewStageMachine returns the machine for stage (0-based) of a pipeline of
// stages stages running micro micro-batches per step under kind. It is
// NewStage(Pipeline{Schedule: kind, Stages: stages, Micro: micro}, stage).
func NewStageMachine(kind Schedule, stages, micro, stage int) (*StageMachine, error) {
	return NewStage(Pipeline{Schedule: kind, Stages: stages, Micro: micro}, stage)
}

// NewStage returns the machine for stage (0-based) of pipeline p.
func NewStage(p Pipeline, stage int) (*StageMachine, error) {
	order, err := p.Order(stage)
	if err != nil {
		return nil, fmt.Errorf("new stage machine: %w", err)
	}
	w, _ := p.MaxInFlight(stage) // cannot fail: Order checked
	m := &StageMachine{kind: p.Schedule, stages: p.Stages, micro: p.Micro, stage: stage, window: w, order: order, spec: p}
	for i := range 2 {
		m.act[i] = make([]bool, p.Micro)
		m.grad[i] = make([]bool, p.Micro)
	}
	return m, nil
}

// Schedule, Stages, Micro and Stage return the machine's shape.
func (m *StageMachine) Schedule() Schedule { return m.kind }
func (m *StageMachine) Stages() int        { return m.stages }
func (m *StageMachine) Micro() int         { return m.micro }
func (m *StageMachine) Stage() int         { return m.stage }

// CurrentStep is the 0-based optimizer step being run.
func (m *StageMachine) CurrentStep() int { return m.step }

// MaxInFlight is how many activation slots the stage needs.
func (m *StageMachine) MaxInFlight() int { return m.window }

// Slot is the activation slot micro-batch micro uses on this stage.
func (m *StageMachine) Slot(micro int) int { return micro % m.window }

// InFlight is the number of micro-batches whose forward has completed and
// whose backward has not.
func (m *StageMachine) InFlight() int { return m.inFlight }

// Order returns a copy of the per-step compute order (Step fields are 0).
func (m *StageMachine) Order() []Action { return append([]Action(nil), m.order...) }

func (m *StageMachine) first() bool { return m.stage == 0 }
func (m *StageMachine) last() bool  { return m.stage == m.stages-1 }

// tied reports whether this stage exchanges the tied-embedding gradient:
// the first and the last stage, when they are different stages.
func (m *StageMachine) tied() bool { return m.stages > 1 && (m.first() || m.last()) }

// peer is the stage at the other end of the tied embedding.
func (m *StageMachine) peer() int {
	if m.first() {
		return m.stages - 1
	}
	return 0
}

// Next returns what to do now. It does not change the machine: calling it
// again without a Step in between returns the same action.
func (m *StageMachine) Next() Action {
	cur := m.step & 1
	switch {
	case m.pos < len(m.order):
		a := m.order[m.pos]
		a.Step = m.step
		a.WaitFor = MessageUnknown
		if a.Kind == ActionForward && !m.first() && !m.act[cur][a.Micro] {
			return Action{Kind: ActionWait, Step: m.step, Micro: a.Micro, Slot: -1, WaitFor: MessageActivation}
		}
		if a.Kind == ActionBackward && !m.last() && !m.grad[cur][a.Micro] {
			return Action{Kind: ActionWait, Step: m.step, Micro: a.Micro, Slot: -1, WaitFor: MessageGradient}
		}
		return a
	case m.pos == len(m.order):
		if m.tied() && !m.routed && !m.emb[cur] {
			return Action{Kind: ActionWait, Step: m.step, Micro: -1, Slot: -1, WaitFor: MessageEmbeddingGrad}
		}
		return Action{Kind: ActionOptimizerStep, Step: m.step, Micro: -1, Slot: -1}
	default:
		return Action{Kind: ActionDone, Step: m.step, Micro: -1, Slot: -1}
	}
}

// Step feeds an event in. An event the machine cannot accept returns an
// error wrapping ErrBadEvent and leaves the machine unchanged.
func (m *StageMachine) Step(ev Event) error {
	if err := m.step1(ev); err != nil {
		return fmt.Errorf("stage %d step %d: %v %s: %w", m.stage, m.step, ev.Kind, eventArgs(ev), err)
	}
	return nil
}

func eventArgs(ev Event) string {
	if ev.Kind == EventCompleted {
		return fmt.Sprintf("%v (step %d)", ev.Action, ev.Action.Step)
	}
	return fmt.Sprintf("(step %d, micro %d)", ev.Step, ev.Micro)
}

func (m *StageMachine) step1(ev Event) error {
	switch ev.Kind {
	case EventActivationArrived, EventGradientArrived, EventEmbeddingGradArrived:
		return m.arrive(ev)
	case EventCompleted:
		return m.complete(ev.Action)
	}
	return fmt.Errorf("unknown event kind: %w", ErrBadEvent)
}

func (m *StageMachine) arrive(ev Event) error {
	if ev.Step != m.step && ev.Step != m.step+1 {
		return fmt.Errorf("message for step %d but the stage is at step %d (only this and the next step are accepted): %w",
			ev.Step, m.step, ErrBadEvent)
	}
	i := ev.Step & 1
	if ev.Kind == EventEmbeddingGradArrived {
		if !m.tied() {
			return fmt.Errorf("only the first and last stage of a multi-stage pipeline exchange embedding gradients: %w", ErrBadEvent)
		}
		if m.emb[i] {
			return fmt.Errorf("duplicate embedding gradient: %w", ErrBadEvent)
		}
		m.emb[i] = true
		return nil
	}
	if ev.Micro < 0 || ev.Micro >= m.micro {
		return fmt.Errorf("micro-batch %d out of range [0,%d): %w", ev.Micro, m.micro, ErrBadEvent)
	}
	flags := m.act[i]
	if ev.Kind == EventActivationArrived {
		if m.first() {
			return fmt.Errorf("the first stage reads its input from data, not from a previous stage: %w", ErrBadEvent)
		}
	} else {
		if m.last() {
			return fmt.Errorf("the last stage computes its own gradient from the loss: %w", ErrBadEvent)
		}
		flags = m.grad[i]
	}
	if flags[ev.Micro] {
		return fmt.Errorf("duplicate message: %w", ErrBadEvent)
	}
	flags[ev.Micro] = true
	return nil
}

func (m *StageMachine) complete(a Action) error {
	want := m.Next()
	if !want.Kind.Compute() || a.Kind != want.Kind || a.Step != want.Step || a.Micro != want.Micro {
		return fmt.Errorf("completed %v but the machine offers %v: %w", a, want, ErrBadEvent)
	}
	switch a.Kind {
	case ActionForward:
		m.inFlight++
	case ActionBackward:
		m.inFlight--
	}
	m.pos++
	return nil
}

// Advance begins the next step. It is only legal once Next returns Done.
func (m *StageMachine) Advance() error {
	if m.pos <= len(m.order) {
		return fmt.Errorf("stage %d step %d: advance: %w", m.stage, m.step, ErrNotDone)
	}
	old := m.step & 1 // becomes the slot for step+2
	clear(m.act[old])
	clear(m.grad[old])
	m.emb[old] = false
	m.step++
	m.pos = 0
	return nil
}

// Sends lists the messages completing a produces, in the order to send
// them: a Forward on a non-last stage sends its activation to stage+1; a
// Backward on a non-first stage sends its input gradient to stage-1; the
// last Backward of the step on the first or last stage (of a multi-stage
// pipeline) also sends the tied-embedding gradient to the other end.
func (m *StageMachine) Sends(a Action) []Message {
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
		if m.tied() && !m.routed && a.Micro == m.order[len(m.order)-1].Micro {
			out = append(out, Message{Kind: MessageEmbeddingGrad, Step: a.Step, Micro: -1, From: m.stage, To: m.peer()})
		}
	}
	return out
}
