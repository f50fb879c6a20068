package scheduler

import "fmt"

// checkShape validates (stages, micro, stage) once for every entry point.
func checkShape(stages, micro, stage int) error {
	switch {
	case stages < 1:
		return fmt.Errorf("stages = %d, want ≥ 1: %w", stages, ErrBadShape)
	case micro < 1:
		return fmt.Errorf("micro-batches = %d, want ≥ 1: %w", micro, ErrBadShape)
	case stage < 0 || stage >= stages:
		return fmt.Errorf("stage = %d, want 0 ≤ stage < %d: %w", stage, stages, ErrBadShape)
	}
	return nil
}

// MaxInFlight is the largest number of micro-batches whose activations
// stage holds at once under kind (a micro-batch is held from the start of
// its forward to the end of its backward): M for GPipe, min(S-stage, M) for
// 1F1B. Size the activation slots with it.
func MaxInFlight(kind Schedule, stages, micro, stage int) (int, error) {
	if err := checkShape(stages, micro, stage); err != nil {
		return 0, err
	}
	switch kind {
	case GPipe:
		return micro, nil
	case OneFOneB:
		return min(stages-stage, micro), nil
	}
	return 0, fmt.Errorf("max in flight: %v: %w", kind, ErrUnknownSchedule)
}

// Order returns the compute actions of one optimizer step on stage, in the
// order the schedule runs them (Forward and Backward only; the optimizer
// step follows them). Step is 0 in the returned actions; Slot is set.
func Order(kind Schedule, stages, micro, stage int) ([]Action, error) {
	w, err := MaxInFlight(kind, stages, micro, stage)
	if err != nil {
		return nil, fmt.Errorf("order: %w", err)
	}
	var ops []Action
	switch kind {
	case GPipe:
		ops = orderGPipe(micro)
	case OneFOneB:
		ops = order1F1B(stages, micro, stage)
	}
	for i := range ops {
		ops[i].Slot = ops[i].Micro % w
	}
	return ops, nil
}
