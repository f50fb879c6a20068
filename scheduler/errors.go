package scheduler

import "errors"

// Sentinel errors. Callers test them with errors.Is; the wrapped message
// carries the offending values.
var (
	// ErrUnknownSchedule: a schedule name or value that is not GPipe or 1F1B.
	ErrUnknownSchedule = errors.New(`unknown pipeline schedule (use "gpipe" or "1f1b")`)

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
