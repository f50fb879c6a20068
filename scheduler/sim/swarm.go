package sim

import (
	"fmt"
	"math"
)

// Swarm is a pipeline whose stages are held by several replicas each: the
// step's micro-batches are spread over a stage's replicas (round-robin),
// and after its backwards each stage's replicas average their weight
// gradients by a ring all-reduce among themselves before the optimizer
// step.
//
// It is projected as lanes: with round-robin routing micro-batch j crosses
// the pipeline on replica j mod R of every stage, so each lane is the
// pipeline of Lane (Config, with Micro replaced by its share
// ceil(M / min R)), all lanes in parallel; then the slowest stage's ring
// all-reduce, 2(R−1) hops of a 1/R slice of its gradient each, is added
// before the optimizer step. Overlap of one stage's all-reduce with other
// stages' backwards is ignored, so the projection errs towards slow.
type Swarm struct {
	Lane     Config
	Replicas []int // per stage (one entry: every stage)
	// GradientBytes is one replica's weight gradient as the all-reduce
	// sends it (after its codec), per stage (one entry: every stage).
	GradientBytes []int64
	// Replica links between the replicas of a stage, each direction.
	ReplicaBPS     float64 // bits/s; math.Inf(1) = unlimited
	ReplicaLatency float64 // one-way, seconds
}

// SwarmResult is the projection.
type SwarmResult struct {
	Result               // of one lane, with StepTime and TokensPerSecond of the whole swarm
	LaneStepTime float64 // one lane's step, without the all-reduce
	AllReduce    float64 // the slowest stage's ring all-reduce, seconds
	LaneMicro    int     // micro-batches per lane
}

// RunSwarm projects a swarm's step time and tokens/s.
func RunSwarm(s Swarm) (SwarmResult, error) {
	S := s.Lane.Stages
	pick := func(v []int, i int) int {
		if len(v) == 1 {
			return v[0]
		}
		return v[i]
	}
	if len(s.Replicas) != 1 && len(s.Replicas) != S {
		return SwarmResult{}, fmt.Errorf("sim: %d replica counts for %d stages (want 1 or %d): %w", len(s.Replicas), S, S, ErrBadConfig)
	}
	if len(s.GradientBytes) != 1 && len(s.GradientBytes) != S {
		return SwarmResult{}, fmt.Errorf("sim: %d gradient sizes for %d stages (want 1 or %d): %w", len(s.GradientBytes), S, S, ErrBadConfig)
	}
	minR := math.MaxInt
	for i := 0; i < S; i++ {
		r := pick(s.Replicas, i)
		if r < 1 {
			return SwarmResult{}, fmt.Errorf("sim: stage %d has %d replicas: %w", i, r, ErrBadConfig)
		}
		minR = min(minR, r)
	}
	lane := s.Lane
	M := lane.Micro
	lane.Micro = (M + minR - 1) / minR
	tokens := lane.TokensPerStep
	lane.TokensPerStep = 0
	res, err := Run(lane)
	if err != nil {
		return SwarmResult{}, err
	}
	var ar float64
	for i := 0; i < S; i++ {
		r := pick(s.Replicas, i)
		if r < 2 {
			continue
		}
		slice := float64(s.GradientBytes[min(i, len(s.GradientBytes)-1)]) / float64(r)
		hop := s.ReplicaLatency
		if !math.IsInf(s.ReplicaBPS, 1) && s.ReplicaBPS > 0 {
			hop += slice * 8 / s.ReplicaBPS
		}
		ar = max(ar, float64(2*(r-1))*hop)
	}
	out := SwarmResult{Result: res, LaneStepTime: res.StepTime, AllReduce: ar, LaneMicro: lane.Micro}
	out.StepTime = res.StepTime + ar
	if tokens > 0 && out.StepTime > 0 {
		out.TokensPerSecond = float64(tokens) / out.StepTime
	}
	return out, nil
}
