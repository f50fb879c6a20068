package scheduler

import "errors"

// Sentinel errors. Callers test them with errors.Is; the wrapped message
// carries the offending values.
var (
	// ErrUnknownSchedule: a schedule name or value that is not GPipe, 1F1B
	// or Async.
	ErrUnknownSchedule = errors.New(`unknown pipeline schedule (use "gpipe", "1f1b" or "async")`)

	// ErrNoStepOrder: the async schedule was asked for a per-step order or a
	// StageMachine. It streams micro-batches across steps; drive it with
	// NewMachine / NewAsyncMachine.
	ErrNoStepOrder = errors.New("the async schedule has no per-step order: use scheduler.NewMachine or NewAsyncMachine")

	// ErrBadShape: stages, micro-batches or the stage index are out of range.
	ErrBadShape = errors.New("bad pipeline shape")

	// ErrBadEvent: an event the stage machine cannot accept in its current
	// state (a duplicate or impossible arrival, a completion of an action
	// that was not offered). The machine's state is unchanged; the runtime
	// has a bug or received a forged or stale message.
	ErrBadEvent = errors.New("event rejected by stage machine")

	// ErrNotDone: Advance was called before the step finished.
	ErrNotDone = errors.New("step not finished: keep driving Next until it returns Done")

	// ErrBadSplit: a stage split or cost table that cannot be used.
	ErrBadSplit = errors.New("bad stage split")
)
