package scheduler

import (
	"fmt"
	"strings"
)

// Schedule names a pipeline schedule: the order in which one stage runs the
// forwards and backwards of the micro-batches of an optimizer step.
type Schedule int

const (
	// ScheduleUnknown is the zero value; it is never valid, so a forgotten
	// config field fails loudly instead of silently picking a schedule.
	ScheduleUnknown Schedule = iota
	// GPipe runs all M forwards, then all M backwards in reverse micro-batch
	// order (see OrderGPipe for why reverse). Every stage holds M
	// micro-batches of activations.
	GPipe
	// OneFOneB is PipeDream-flush / Megatron's non-interleaved 1F1B: stage i
	// runs S-i-1 warm-up forwards, then alternates one forward and one
	// backward, then drains the remaining backwards. Same bubble as GPipe,
	// but stage i holds at most S-i micro-batches of activations.
	OneFOneB
	// Async never flushes: micro-batches stream through the pipeline across
	// optimizer steps, each stage applies a step as soon as it has that
	// step's gradients, and a backward uses the weight version its forward
	// used (weight stashing). It is driven by AsyncMachine (NewMachine), not
	// by StageMachine, because it has no per-step order; see docs/async.md.
	Async
)

// String returns the name ParseSchedule accepts.
func (s Schedule) String() string {
	switch s {
	case GPipe:
		return "gpipe"
	case OneFOneB:
		return "1f1b"
	case Async:
		return "async"
	default:
		return fmt.Sprintf("Schedule(%d)", int(s))
	}
}

// Valid reports whether s is a known schedule.
func (s Schedule) Valid() bool { return s == GPipe || s == OneFOneB || s == Async }

// ParseSchedule accepts "gpipe", "1f1b" (also "pipedream-flush") and "async",
// case-insensitively and ignoring surrounding spaces.
func ParseSchedule(name string) (Schedule, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "gpipe":
		return GPipe, nil
	case "1f1b", "pipedream-flush", "pipedream_flush":
		return OneFOneB, nil
	case "async":
		return Async, nil
	}
	return ScheduleUnknown, fmt.Errorf("schedule %q: %w", name, ErrUnknownSchedule)
}

// MarshalText makes Schedule usable as a TOML/JSON string field.
func (s Schedule) MarshalText() ([]byte, error) {
	if !s.Valid() {
		return nil, fmt.Errorf("marshal %v: %w", s, ErrUnknownSchedule)
	}
	return []byte(s.String()), nil
}

// UnmarshalText parses the names ParseSchedule accepts.
func (s *Schedule) UnmarshalText(b []byte) error {
	v, err := ParseSchedule(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
