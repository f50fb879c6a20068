package sim

import (
	"fmt"
	"math"

	"github.com/narrowband/narrowband/scheduler"
)

// Swarm is a pipeline whose every stage is held by R replicas
// (docs/swarm.md): micro-batch j of a step goes to replica j mod R of
// every stage, and after its backwards each stage's replicas sum their
// weight gradients over a chain among themselves before the optimizer
// step.
//
// It is projected as the runtime runs it. The lanes: lane r (the replicas
// r of every stage) runs micro-batches r, r+R, … as a pipeline of its own
// (Config.Mine: its own 1F1B warm-up), all lanes in parallel, so the
// swarm's step is the step of lane 0, which has the most, ceil(M / R).
// The sum: replica 0 sends its gradient to replica 1, which adds its own
// and passes the partial sum on, up to replica R−1, which sends the total
// back down the same links; the gradient goes in frames (of at most
// FrameBytes), each passed on as soon as it has arrived, and the pass down
// runs beside the pass up on the other direction of each link. So the sum
// is 2(R−1) store-and-forward hops in a row, each link direction carrying
// the gradient once, and on links of equal speed the last frame reaches
// replica 0 after
//
//	T + (2R−3)·c + 2(R−1)·L
//
// where T is the gradient's serialization time (GradientBytes·8 /
// ReplicaBPS), c the largest frame's and L the one-way latency: the
// frames queue behind the largest at every hop after the first, whatever
// their order (ChainSum; TestChainSum checks it against the chain worked
// out frame by frame). Each stage's sum runs in Config.ReplicaSum, after
// its last backward and before the barrier of the optimizer step, so one
// stage's sum overlaps the backwards still running upstream and the
// slowest stage's sum is what the step waits on; the two ends exchange the
// tied-embedding gradient after theirs.
//
// Not modelled: the CPU time of adding and framing the chunks; a peer's
// links sharing one uplink (a middle replica sends the gradient on two
// links, its lane's activations on a third: the runtime shapes each link on
// its own, and so does this); jitter and loss. A ring all-reduce, which
// the runtime does not do, is not modelled either: on full-duplex links
// of one speed per link it would send 2(R−1)/R of the gradient on each
// link direction, more than the chain's once for R > 2, with as many
// latencies.
type Swarm struct {
	Lane     Config // one lane, with the whole step's Micro and TokensPerStep
	Replicas int    // R ≥ 1, every stage
	// GradientBytes is, per stage (one entry: every stage), the wire bytes
	// one link of the stage's chain carries each way: one replica's
	// gradient as the sum sends it (framed, after its codec).
	GradientBytes []int64
	// FrameBytes is, per stage (one entry: every stage), the largest frame
	// of the stage's sum; 0 or none: the gradient goes as one frame (no
	// pipelining).
	FrameBytes []int64
	// Replica links between the replicas of a stage, each direction.
	ReplicaBPS     float64 // bits/s; math.Inf(1) = unlimited
	ReplicaLatency float64 // one-way, seconds
	// Passes is how many sums over the chain a step's sum takes, one
	// after the other (a PowerSGD sum: its P factors, then its Q; 0 means
	// 1): each pays the chain's hops and latencies, and GradientBytes is
	// all of them together.
	Passes int
}

// SwarmResult is the projection.
type SwarmResult struct {
	Result               // of the swarm: the lanes with the sums; tokens/s of the whole step
	LaneStepTime float64 // the lanes' step alone, without the sums
	// ReplicaSum is the slowest stage's gradient sum, seconds; ReplicaSums
	// every stage's.
	ReplicaSum  float64
	ReplicaSums []float64
	LaneMicro   int // micro-batches of the busiest lane
	// ReplicaBytes is the wire bytes of the sums per step, over every
	// stage, link and direction (the runtime's replica_bytes).
	ReplicaBytes int64
}

// ChainSum is the seconds the chain takes to sum a gradient of gradBytes
// over R replicas in frames of at most frameBytes (0: one frame) on links
// of bps bits/s and latency seconds one way: see Swarm.
func ChainSum(R int, gradBytes, frameBytes int64, bps, latency float64) float64 {
	if R < 2 || gradBytes <= 0 {
		return 0
	}
	T, c := 0.0, 0.0
	if !math.IsInf(bps, 1) {
		frame := gradBytes
		if frameBytes > 0 {
			frame = min(frame, frameBytes)
		}
		T, c = float64(gradBytes)*8/bps, float64(frame)*8/bps
	}
	return T + float64(2*R-3)*c + float64(2*(R-1))*latency
}

// Validate checks s's swarm fields (RunSwarm checks Lane itself).
func (s Swarm) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("sim swarm: "+format+": %w", append(args, ErrBadConfig)...)
	}
	if s.Replicas < 1 {
		return bad("Replicas = %d, want ≥ 1", s.Replicas)
	}
	if s.Replicas > 1 && s.Lane.Schedule == scheduler.Async {
		return bad("Replicas = %d with the async schedule: the runtime does not run replicas with it (docs/swarm.md)", s.Replicas)
	}
	if s.Replicas > s.Lane.Micro {
		return bad("Replicas = %d with Lane.Micro = %d: each replica needs a micro-batch", s.Replicas, s.Lane.Micro)
	}
	if len(s.GradientBytes) != 1 && len(s.GradientBytes) != s.Lane.Stages {
		return bad("GradientBytes has %d entries, want 1 or Stages (%d)", len(s.GradientBytes), s.Lane.Stages)
	}
	for i, g := range s.GradientBytes {
		if g < 0 {
			return bad("GradientBytes[%d] = %d, want ≥ 0", i, g)
		}
	}
	if len(s.FrameBytes) > 1 && len(s.FrameBytes) != s.Lane.Stages {
		return bad("FrameBytes has %d entries, want 0, 1 or Stages (%d)", len(s.FrameBytes), s.Lane.Stages)
	}
	for i, f := range s.FrameBytes {
		if f < 0 {
			return bad("FrameBytes[%d] = %d, want ≥ 0 (0: one frame)", i, f)
		}
	}
	if !okRate(s.ReplicaBPS) || !okDuration(s.ReplicaLatency) {
		return bad("ReplicaBPS = %v, ReplicaLatency = %v, want BPS > 0 (math.Inf(1) for unlimited) and finite latency ≥ 0 seconds", s.ReplicaBPS, s.ReplicaLatency)
	}
	if s.Passes < 0 {
		return bad("Passes = %d, want ≥ 0 (0: one pass)", s.Passes)
	}
	if len(s.Lane.ReplicaSum) > 0 || s.Lane.Mine != nil {
		return bad("Lane.ReplicaSum or Lane.Mine is set; RunSwarm sets them")
	}
	return nil
}

// RunSwarm projects a swarm's step time and tokens/s.
func RunSwarm(s Swarm) (SwarmResult, error) {
	if err := s.Validate(); err != nil {
		return SwarmResult{}, err
	}
	S, R := s.Lane.Stages, s.Replicas
	lane := s.Lane
	if R > 1 {
		lane.Mine = make([]bool, lane.Micro)
		for j := 0; j < lane.Micro; j += R {
			lane.Mine[j] = true
		}
	}
	alone, err := Run(lane)
	if err != nil {
		return SwarmResult{}, err
	}
	out := SwarmResult{Result: alone, LaneStepTime: alone.StepTime, LaneMicro: (lane.Micro + R - 1) / R, ReplicaSums: make([]float64, S)}
	if R == 1 {
		return out, nil
	}
	for i := range out.ReplicaSums {
		g, f := s.GradientBytes[min(i, len(s.GradientBytes)-1)], int64(0)
		if len(s.FrameBytes) > 0 {
			f = s.FrameBytes[min(i, len(s.FrameBytes)-1)]
		}
		out.ReplicaSums[i] = ChainSum(R, g, f, s.ReplicaBPS, s.ReplicaLatency)
		if s.Passes > 1 && g > 0 {
			// Every further pass waits for the last one's total to come
			// back down: the hops and latencies again, its bytes already in.
			hop := min(g, f)
			if f == 0 {
				hop = g
			}
			c := 0.0
			if !math.IsInf(s.ReplicaBPS, 1) {
				c = float64(hop) * 8 / s.ReplicaBPS
			}
			out.ReplicaSums[i] += float64(s.Passes-1) * (ChainSum(R, hop, hop, s.ReplicaBPS, s.ReplicaLatency) - c)
		}
		out.ReplicaSum = max(out.ReplicaSum, out.ReplicaSums[i])
		out.ReplicaBytes += 2 * int64(R-1) * g
	}
	lane.ReplicaSum = out.ReplicaSums
	if out.Result, err = Run(lane); err != nil {
		return SwarmResult{}, err
	}
	return out, nil
}
