package pipeline

import (
	"slices"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/scheduler"
)

// The driver's side of stages held by several replicas (docs/swarm.md):
// the initial nodes are numbered as scheduler.Replicas numbers workers
// (the first replicas first, in stage order, so nodes 0..S-1 are what a
// pipeline without replicas calls its stages); driver_swarm.go runs them.

// replicaPlan is the run's plan of replicas, nil with one replica a stage.
func replicaPlan(cfg config.Config, layout scheduler.Layout) (*scheduler.Replicas, error) {
	R := cfg.Pipeline.ReplicaCount()
	if R == 1 {
		return nil, nil
	}
	p, err := scheduler.NewReplicas(layout.Stages(), R, cfg.Train.MicroBatches)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// replicaHolders splits the placement's holders (every worker, numbered
// by plan) into what the membership machine takes: each stage's first
// replica, and its further ones.
func replicaHolders(plan *scheduler.Replicas, holders []string) ([]string, [][]string) {
	if plan == nil {
		return holders, nil
	}
	S := plan.Stages()
	more := make([][]string, S)
	for k := S; k < len(holders); k++ {
		more[plan.StageOf(k)] = append(more[plan.StageOf(k)], holders[k])
	}
	return slices.Clone(holders[:S]), more
}
