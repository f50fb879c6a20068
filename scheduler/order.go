package scheduler

// MaxInFlight is Pipeline{kind, stages, micro, 0}.MaxInFlight(stage): M for
// GPipe, min(S-stage, M) for 1F1B.
func MaxInFlight(kind Schedule, stages, micro, stage int) (int, error) {
	return Pipeline{Schedule: kind, Stages: stages, Micro: micro}.MaxInFlight(stage)
}

// Order is Pipeline{kind, stages, micro, 0}.Order(stage).
func Order(kind Schedule, stages, micro, stage int) ([]Action, error) {
	return Pipeline{Schedule: kind, Stages: stages, Micro: micro}.Order(stage)
}
