package scheduler

import (
	"fmt"
	"math"
)

// Pipeline is the shape every stage of a run shares. The plain functions
// (NewStageMachine, Order, MaxInFlight) are this with Lookahead 0.
type Pipeline struct {
	Schedule Schedule
	Stages   int // S ≥ 1
	Micro    int // micro-batches per optimizer step, M ≥ 1

	// Lookahead (1F1B only; 0 means 1) is how many more warm-up forwards a
	// stage runs than the stage after it: stage i warms up with
	// Lookahead·(S-i-1) forwards. Standard 1F1B is 1, and then every
	// micro-batch on the last stages waits one neighbour round trip (see
	// LookaheadFor). Lookahead g hides round trips up to (g-1)·(tf+tb) at
	// the price of activation memory: stage i holds min(g·(S-i-1)+1, M)
	// micro-batches. A Lookahead ≥ M makes 1F1B hold as much as GPipe.
	Lookahead int

	// InFlight (async only; 0 means 1) is D, the in-flight depth per hop:
	// stage i keeps up to D·(S-i-1)+1 micro-batches in flight (forwarded,
	// backward not yet run), D more than the stage after it. The depth is
	// per hop, not one cap for every stage, because what keeps a stage busy
	// is the slack between it and its neighbour: with equal windows every
	// stage would wait a neighbour round trip per micro-batch. D = 1 is
	// PipeDream's asynchronous 1F1B (stage i holds S-i, as sync 1F1B does);
	// D hides a neighbour round trip of up to (D-1)·(tf+tb). InFlightFor
	// picks it from measured times.
	InFlight int
}

// Validate checks the shape; messages name the field and the bad value.
func (p Pipeline) Validate() error {
	switch {
	case !p.Schedule.Valid():
		return fmt.Errorf("pipeline: schedule %v: %w", p.Schedule, ErrUnknownSchedule)
	case p.Stages < 1:
		return fmt.Errorf("pipeline: stages = %d, want ≥ 1: %w", p.Stages, ErrBadShape)
	case p.Micro < 1:
		return fmt.Errorf("pipeline: micro-batches = %d, want ≥ 1: %w", p.Micro, ErrBadShape)
	case p.Lookahead < 0:
		return fmt.Errorf("pipeline: lookahead = %d, want ≥ 0 (0 or 1 = standard 1F1B): %w", p.Lookahead, ErrBadShape)
	case p.Lookahead > 1 && p.Schedule != OneFOneB:
		return fmt.Errorf("pipeline: lookahead = %d only applies to 1f1b, not %v: %w", p.Lookahead, p.Schedule, ErrBadShape)
	case p.InFlight < 0:
		return fmt.Errorf("pipeline: in_flight = %d, want ≥ 0 (0 or 1 = one more micro-batch in flight per hop): %w", p.InFlight, ErrBadShape)
	case p.InFlight > 1 && p.Schedule != Async:
		return fmt.Errorf("pipeline: in_flight = %d only applies to async, not %v (1f1b has lookahead): %w", p.InFlight, p.Schedule, ErrBadShape)
	case p.Schedule == Async && p.InFlight > 1<<20:
		return fmt.Errorf("pipeline: in_flight = %d, want ≤ %d: %w", p.InFlight, 1<<20, ErrBadShape)
	}
	return nil
}

func (p Pipeline) checkStage(stage int) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if stage < 0 || stage >= p.Stages {
		return fmt.Errorf("pipeline: stage = %d, want 0 ≤ stage < %d: %w", stage, p.Stages, ErrBadShape)
	}
	return nil
}

// warmup is the number of forwards stage runs before its first backward.
func (p Pipeline) warmup(stage int) int {
	switch p.Schedule {
	case GPipe:
		return p.Micro
	case Async:
		// Not capped at M: the stream crosses step boundaries.
		return max(p.InFlight, 1) * (p.Stages - stage - 1)
	}
	g := max(p.Lookahead, 1)
	n := p.Stages - stage - 1
	if n > 0 && g > p.Micro/n { // g·n ≥ M, without overflow
		return p.Micro
	}
	return min(g*n, p.Micro)
}

// MaxInFlight is the largest number of micro-batches whose activations
// stage holds at once (from the start of a micro-batch's forward to the end
// of its backward): M for GPipe, min(Lookahead·(S-stage-1)+1, M) for 1F1B,
// InFlight·(S-stage-1)+1 for Async. Size the activation slots with it.
func (p Pipeline) MaxInFlight(stage int) (int, error) {
	if err := p.checkStage(stage); err != nil {
		return 0, err
	}
	if p.Schedule == Async {
		return p.warmup(stage) + 1, nil
	}
	return min(p.warmup(stage)+1, p.Micro), nil
}

// Order returns the compute actions of one optimizer step on stage, in the
// order the schedule runs them (Forward and Backward only; the optimizer
// step follows them). Step is 0 in the returned actions; Slot is set.
// Async has no per-step order (ErrNoStepOrder).
func (p Pipeline) Order(stage int) ([]Action, error) {
	w, err := p.MaxInFlight(stage)
	if err != nil {
		return nil, fmt.Errorf("order: %w", err)
	}
	if p.Schedule == Async {
		return nil, fmt.Errorf("order: %w", ErrNoStepOrder)
	}
	var ops []Action
	switch p.Schedule {
	case GPipe:
		ops = orderGPipe(p.Micro)
	case OneFOneB:
		ops = order1F1B(p.Micro, p.warmup(stage))
	}
	for i := range ops {
		ops[i].Slot = ops[i].Micro % w
	}
	return ops, nil
}

// LookaheadFor returns the smallest 1F1B Lookahead that hides a neighbour
// round trip of roundTrip seconds (two one-way latencies plus the time to
// serialize one activation and one gradient) when a micro-batch's forward
// and backward take forward and backward seconds: 1 + ⌈roundTrip/(tf+tb)⌉,
// and 1 (standard 1F1B) for a free link. Inputs that are not finite and ≥ 0
// give 1.
func LookaheadFor(roundTrip, forward, backward float64) int {
	c := forward + backward
	if !(roundTrip > 0) || !(c > 0) || math.IsInf(roundTrip, 0) || math.IsInf(c, 0) {
		return 1
	}
	g := 1 + math.Ceil(roundTrip/c-1e-12)
	if g > 1<<20 {
		return 1 << 20
	}
	return int(g)
}

// InFlightFor returns the async in-flight depth per hop (Pipeline.InFlight)
// that keeps every stage busy when a neighbour round trip (two one-way
// latencies plus serializing one activation and one gradient) takes
// roundTrip seconds, a micro-batch's forward and backward take forward and
// backward seconds and an optimizer step optimizer seconds:
// 1 + ⌈(roundTrip+optimizer)/(forward+backward)⌉. Why: stage i runs
// F(j+w_i) then B(j); B(j) needs the gradient stage i+1 sends after its
// own B(j), which follows its F(j+w_{i+1}) = F(j+w_i-D), whose input
// stage i sent D forward/backward pairs earlier. That leaves D-1 pairs of
// work to cover the round trip, and also a neighbour's optimizer step,
// which falls at a different point of the stream on every stage and
// pauses it. (1F1B's
// LookaheadFor does not count the optimizer: it flushes at every step
// anyway.) Inputs that are not finite and ≥ 0 count as 0; no work gives 1.
func InFlightFor(roundTrip, forward, backward, optimizer float64) int {
	ok := func(x float64) float64 {
		if !(x > 0) || math.IsInf(x, 0) {
			return 0
		}
		return x
	}
	return LookaheadFor(ok(roundTrip)+ok(optimizer), ok(forward), ok(backward))
}
