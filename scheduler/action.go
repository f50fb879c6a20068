package scheduler

import "fmt"

// ActionKind says what a stage should do now.
type ActionKind int

const (
	ActionUnknown ActionKind = iota
	// ActionWait: the next action in the schedule needs a message that has
	// not arrived; Action.WaitFor and Action.Micro say which. Block on the
	// inbox and Step the arrival in.
	ActionWait
	// ActionForward: run the forward of Action.Micro into activation slot
	// Action.Slot.
	ActionForward
	// ActionBackward: run the backward of Action.Micro from slot Action.Slot
	// (backward adds into the stage's gradient buffers); the slot is free
	// afterwards.
	ActionBackward
	// ActionOptimizerStep: all backwards of the step are done (and, on the
	// first and last stage, the peer's tied-embedding gradient has been
	// added); apply the optimizer and zero the gradients.
	ActionOptimizerStep
	// ActionDone: the step is finished. Call Advance to begin the next one.
	// (Async: the whole run is finished; there is nothing to advance.)
	ActionDone
	// ActionStash (async only): copy the live weights and keep the copy as
	// weight version Action.Version. It comes right before an
	// OptimizerStep that would overwrite a version some in-flight
	// micro-batch's backward still needs.
	ActionStash
	// ActionDropVersion (async only): free the stashed copy of weight
	// version Action.Version; its last backward has run.
	ActionDropVersion
)

func (k ActionKind) String() string {
	switch k {
	case ActionWait:
		return "wait"
	case ActionForward:
		return "forward"
	case ActionBackward:
		return "backward"
	case ActionOptimizerStep:
		return "optimizer"
	case ActionDone:
		return "done"
	case ActionStash:
		return "stash"
	case ActionDropVersion:
		return "drop"
	default:
		return fmt.Sprintf("ActionKind(%d)", int(k))
	}
}

// Compute reports whether the action is work the stage runs and then reports
// with Completed (a Stash or DropVersion is bookkeeping, but it is reported
// the same way so that the machine knows the copy exists or is gone).
func (k ActionKind) Compute() bool {
	return k == ActionForward || k == ActionBackward || k == ActionOptimizerStep ||
		k == ActionStash || k == ActionDropVersion
}

// Action is what StageMachine.Next asks for.
type Action struct {
	Kind ActionKind
	// Step is the 0-based optimizer step the action belongs to.
	Step int
	// Micro is the micro-batch of a Forward or Backward, and of a Wait for an
	// activation or gradient; -1 otherwise.
	Micro int
	// Slot is the activation slot (0 ≤ Slot < MaxInFlight) a Forward fills
	// and the matching Backward reads; -1 for other kinds.
	Slot int
	// WaitFor is, for a Wait, the kind of message the stage waits for.
	WaitFor MessageKind
	// Version (async only; 0 in GPipe and 1F1B) is the weight version: the
	// one a Forward runs with (always the live one) and the matching
	// Backward must run with (live or stashed); the one an OptimizerStep
	// creates; the one a Stash copies or a DropVersion frees. Version v is
	// the weights after this stage applied steps 0..v-1, so the same number
	// names the same point of training on every stage.
	Version int
	// Delay (async OptimizerStep only) is the largest staleness among the
	// step's micro-batches on this stage: Step minus the version their
	// forwards used.
	Delay int
}

// String is compact and stable: golden transcripts use it. "F3" is the
// forward of micro-batch 3, "B3" its backward, "OPT" the optimizer step,
// "wait(act 3)" a wait for the activation of micro-batch 3.
func (a Action) String() string {
	switch a.Kind {
	case ActionForward:
		return fmt.Sprintf("F%d", a.Micro)
	case ActionBackward:
		return fmt.Sprintf("B%d", a.Micro)
	case ActionOptimizerStep:
		return "OPT"
	case ActionDone:
		return "DONE"
	case ActionStash:
		return fmt.Sprintf("STASH v%d", a.Version)
	case ActionDropVersion:
		return fmt.Sprintf("DROP v%d", a.Version)
	case ActionWait:
		if a.WaitFor == MessageEmbeddingGrad {
			return "wait(emb)"
		}
		return fmt.Sprintf("wait(%s %d)", a.WaitFor, a.Micro)
	default:
		return a.Kind.String()
	}
}

// MessageKind is the kind of a message between stages.
type MessageKind int

const (
	MessageUnknown MessageKind = iota
	// MessageActivation: the output of stage i's forward, to stage i+1.
	MessageActivation
	// MessageGradient: the gradient w.r.t. stage i's input, to stage i-1.
	MessageGradient
	// MessageEmbeddingGrad: the tied token-embedding gradient, exchanged
	// between the first and the last stage once per step; each adds the
	// peer's into its own before the optimizer step.
	MessageEmbeddingGrad
)

func (k MessageKind) String() string {
	switch k {
	case MessageActivation:
		return "act"
	case MessageGradient:
		return "grad"
	case MessageEmbeddingGrad:
		return "emb"
	default:
		return fmt.Sprintf("MessageKind(%d)", int(k))
	}
}

// Message is a send a completed action produces. The runtime sends it in the
// background; the sending stage never waits for it.
type Message struct {
	Kind     MessageKind
	Step     int
	Micro    int // -1 for MessageEmbeddingGrad
	From, To int // stage indices
}

func (m Message) String() string {
	if m.Kind == MessageEmbeddingGrad {
		return fmt.Sprintf("emb %d->%d", m.From, m.To)
	}
	return fmt.Sprintf("%s %d %d->%d", m.Kind, m.Micro, m.From, m.To)
}

// EventKind is the kind of an Event.
type EventKind int

const (
	EventUnknown EventKind = iota
	EventActivationArrived
	EventGradientArrived
	EventEmbeddingGradArrived
	EventCompleted
)

func (k EventKind) String() string {
	switch k {
	case EventActivationArrived:
		return "activation-arrived"
	case EventGradientArrived:
		return "gradient-arrived"
	case EventEmbeddingGradArrived:
		return "embedding-grad-arrived"
	case EventCompleted:
		return "completed"
	default:
		return fmt.Sprintf("EventKind(%d)", int(k))
	}
}

// Event is what the runtime tells a StageMachine through Step.
type Event struct {
	Kind   EventKind
	Step   int
	Micro  int
	Action Action // for EventCompleted
}

// ActivationArrived: the activation of micro-batch micro of step step has
// been received from the previous stage and is ready to use.
func ActivationArrived(step, micro int) Event {
	return Event{Kind: EventActivationArrived, Step: step, Micro: micro}
}

// GradientArrived: the gradient for micro-batch micro of step step has been
// received from the next stage.
func GradientArrived(step, micro int) Event {
	return Event{Kind: EventGradientArrived, Step: step, Micro: micro}
}

// EmbeddingGradArrived: the peer's tied-embedding gradient of step step has
// been received (first and last stage only).
func EmbeddingGradArrived(step int) Event {
	return Event{Kind: EventEmbeddingGradArrived, Step: step, Micro: -1}
}

// Completed: the runtime finished running a (as returned by Next).
func Completed(a Action) Event {
	return Event{Kind: EventCompleted, Step: a.Step, Micro: a.Micro, Action: a}
}

// Arrived turns a received Message into the receiver's arrival event.
func Arrived(m Message) Event {
	switch m.Kind {
	case MessageActivation:
		return ActivationArrived(m.Step, m.Micro)
	case MessageGradient:
		return GradientArrived(m.Step, m.Micro)
	case MessageEmbeddingGrad:
		return EmbeddingGradArrived(m.Step)
	}
	return Event{Kind: EventUnknown, Step: m.Step, Micro: m.Micro}
}
