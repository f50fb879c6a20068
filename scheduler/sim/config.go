package sim

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/narrowband/narrowband/scheduler"
)

// ErrBadConfig is wrapped by every Config.Validate error.
var ErrBadConfig = errors.New("bad simulator config")

// Compute is one stage's compute time, in seconds.
type Compute struct {
	Forward   float64 // per micro-batch
	Backward  float64 // per micro-batch
	Optimizer float64 // per step
}

// Link is the connection between stage i and i+1. Each direction is a FIFO
// serializer: a message of n bytes occupies it n·8/bandwidth seconds, then
// arrives Latency later. Sending never blocks the sender's compute.
type Link struct {
	ForwardBPS  float64 // bits/s, stage i → i+1 (activations); math.Inf(1) = unlimited
	BackwardBPS float64 // bits/s, stage i+1 → i (gradients); math.Inf(1) = unlimited
	Latency     float64 // one-way, seconds

	ActivationBytes int64 // wire bytes of one activation message
	GradientBytes   int64 // wire bytes of one gradient message
}

// Unlimited is a link with no bandwidth limit and no latency.
var Unlimited = Link{ForwardBPS: math.Inf(1), BackwardBPS: math.Inf(1)}

// Embedding is the tied-embedding gradient exchange between the first and
// the last stage (one message each way per step). With two stages it
// shares Links[0]'s serializers (it is the same connection) and only Bytes
// is used.
type Embedding struct {
	BPS     float64 // bits/s each way; math.Inf(1) = unlimited
	Latency float64 // one-way, seconds
	Bytes   int64   // wire bytes of one embedding-gradient message
}

// Config describes one simulated run.
type Config struct {
	Schedule scheduler.Schedule
	Stages   int // S ≥ 1
	Micro    int // micro-batches per step, M ≥ 1
	// Lookahead is scheduler.Pipeline.Lookahead (1F1B only; 0 = standard).
	Lookahead int
	// InFlight is scheduler.Pipeline.InFlight (Async only; 0 = 1).
	InFlight int
	// Steps is how many optimizer steps to simulate (≥ 1). Step time is
	// measured between the ends of the first and last, so ≥ 2 gives the
	// steady state; 3 is plenty.
	Steps int

	// Compute has one entry per stage, or one entry used for every stage.
	Compute []Compute
	// Links has one entry per boundary (Stages-1), or one entry used for
	// every boundary. Unused when Stages == 1.
	Links     []Link
	Embedding Embedding

	// Barrier models a runtime that synchronises every stage around the
	// optimizer step, as narrowband's does for the global gradient norm
	// (clipping needs the norm over all stages): a stage's optimizer step
	// starts only once every stage has reached its own, and no stage
	// starts the next step before every stage has finished this one.
	// BarrierLatency is added at each of the two synchronisations (the
	// round trip to the coordinator). The async schedule has no step
	// boundary to synchronise at, so Barrier with Async is an error.
	Barrier        bool
	BarrierLatency float64

	// ReplicaSum is, per stage (one entry: every stage; empty: none), the
	// seconds the stage spends after its step's backwards (and the
	// tied-embedding exchange) summing its weight gradients with the
	// stage's other replicas, before its optimizer step and the Barrier,
	// as the runtime's sum does; RunSwarm sets it from the chain's cost.
	// The sync schedules only: the runtime refuses replicas with async.
	ReplicaSum []float64
	// Mine, if set (one flag per micro-batch), runs every stage's machine
	// on the flagged micro-batches only, as the schedule of a pipeline of
	// that share (scheduler.StageMachine.RestrictLane), as a swarm's
	// replica runs its lane when every stage has R replicas and routing
	// is round-robin: one lane of a swarm (RunSwarm sets it). The two ends then
	// exchange the tied-embedding gradient after their ReplicaSum, inside
	// the optimizer step as the swarm runtime does, not after their last
	// backward. The sync schedules only.
	Mine []bool

	// TokensPerStep, if > 0, gives Result.TokensPerSecond.
	TokensPerStep int64
	// Spans asks for the timeline in Result.Spans.
	Spans bool
}

// maxEvents bounds a run so a hostile config cannot make Run loop for
// minutes or hold gigabytes: S=32, M=64, 3 steps needs about 25k.
const maxEvents = 5_000_000

func okRate(v float64) bool     { return v > 0 && !math.IsNaN(v) } // +Inf allowed
func okDuration(v float64) bool { return v >= 0 && !math.IsNaN(v) && !math.IsInf(v, 0) }

// Validate checks the config; messages name the field and the bad value.
func (c Config) Validate() error {
	if !okDuration(c.BarrierLatency) {
		return fmt.Errorf("BarrierLatency = %v, want finite ≥ 0 seconds: %w", c.BarrierLatency, ErrBadConfig)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("sim config: "+format+": %w", append(args, ErrBadConfig)...)
	}
	if err := c.pipeline().Validate(); err != nil {
		return fmt.Errorf("sim config: %w: %w", err, ErrBadConfig)
	}
	if c.Steps < 1 {
		return bad("Steps = %d, want ≥ 1", c.Steps)
	}
	if c.Barrier && c.Schedule == scheduler.Async {
		return bad("Barrier with the async schedule: it never synchronises the stages at a step (clip per stage instead of by the global norm)")
	}
	if n := float64(c.Stages) * float64(c.Micro) * float64(c.Steps) * 8; n > maxEvents {
		return bad("Stages·Micro·Steps = %d·%d·%d is too large to simulate (limit %d)", c.Stages, c.Micro, c.Steps, maxEvents/8)
	}
	if len(c.Compute) != 1 && len(c.Compute) != c.Stages {
		return bad("Compute has %d entries, want 1 or Stages (%d)", len(c.Compute), c.Stages)
	}
	for i, p := range c.Compute {
		if !okDuration(p.Forward) || !okDuration(p.Backward) || !okDuration(p.Optimizer) {
			return bad("Compute[%d] = %+v, want finite times ≥ 0 seconds", i, p)
		}
	}
	if c.Stages > 1 {
		if len(c.Links) != 1 && len(c.Links) != c.Stages-1 {
			return bad("Links has %d entries, want 1 or Stages-1 (%d)", len(c.Links), c.Stages-1)
		}
		for i, l := range c.Links {
			if !okRate(l.ForwardBPS) || !okRate(l.BackwardBPS) {
				return bad("Links[%d]: ForwardBPS = %v, BackwardBPS = %v, want > 0 bits/s (math.Inf(1) for unlimited)", i, l.ForwardBPS, l.BackwardBPS)
			}
			if !okDuration(l.Latency) {
				return bad("Links[%d].Latency = %v, want finite ≥ 0 seconds", i, l.Latency)
			}
			if l.ActivationBytes < 0 || l.GradientBytes < 0 {
				return bad("Links[%d]: ActivationBytes = %d, GradientBytes = %d, want ≥ 0", i, l.ActivationBytes, l.GradientBytes)
			}
		}
		if c.Embedding.Bytes < 0 {
			return bad("Embedding.Bytes = %d, want ≥ 0", c.Embedding.Bytes)
		}
		if c.Stages > 2 {
			if !okRate(c.Embedding.BPS) || !okDuration(c.Embedding.Latency) {
				return bad("Embedding: BPS = %v, Latency = %v, want BPS > 0 (math.Inf(1) for unlimited) and finite Latency ≥ 0",
					c.Embedding.BPS, c.Embedding.Latency)
			}
		}
	}
	if len(c.ReplicaSum) > 0 {
		if len(c.ReplicaSum) != 1 && len(c.ReplicaSum) != c.Stages {
			return bad("ReplicaSum has %d entries, want 0, 1 or Stages (%d)", len(c.ReplicaSum), c.Stages)
		}
		for i, d := range c.ReplicaSum {
			if !okDuration(d) {
				return bad("ReplicaSum[%d] = %v, want finite ≥ 0 seconds", i, d)
			}
		}
		if c.Schedule == scheduler.Async {
			return bad("ReplicaSum with the async schedule: the runtime does not run replicas with it (docs/swarm.md)")
		}
	}
	if c.Mine != nil {
		if len(c.Mine) != c.Micro {
			return bad("Mine has %d flags, want one per micro-batch (Micro = %d)", len(c.Mine), c.Micro)
		}
		if !slices.Contains(c.Mine, true) {
			return bad("Mine flags no micro-batch: a lane needs one")
		}
		if c.Schedule == scheduler.Async {
			return bad("Mine with the async schedule: the runtime does not run replicas with it (docs/swarm.md)")
		}
	}
	if c.TokensPerStep < 0 {
		return bad("TokensPerStep = %d, want ≥ 0", c.TokensPerStep)
	}
	return nil
}

func (c Config) pipeline() scheduler.Pipeline {
	return scheduler.Pipeline{Schedule: c.Schedule, Stages: c.Stages, Micro: c.Micro, Lookahead: c.Lookahead, InFlight: c.InFlight}
}

func (c Config) compute(stage int) Compute {
	if len(c.Compute) == 1 {
		return c.Compute[0]
	}
	return c.Compute[stage]
}

func (c Config) replicaSum(stage int) float64 {
	switch len(c.ReplicaSum) {
	case 0:
		return 0
	case 1:
		return c.ReplicaSum[0]
	}
	return c.ReplicaSum[stage]
}

func (c Config) link(i int) Link {
	if len(c.Links) == 1 {
		return c.Links[0]
	}
	return c.Links[i]
}

// InFlightFor is the async in-flight depth the runtime would choose for c
// (scheduler.InFlightFor): the slowest link's neighbour round trip (two
// latencies plus one activation and one gradient serialized) and the
// longest optimizer step, against the fastest stage's forward+backward,
// so that every stage's slack covers them. Set Config.InFlight to it to
// project the default pipeline.in_flight.
func InFlightFor(c Config) int {
	rtt := 0.0
	if c.Stages > 1 {
		for _, l := range c.Links {
			rt := 2 * l.Latency
			if !math.IsInf(l.ForwardBPS, 1) {
				rt += float64(l.ActivationBytes) * 8 / l.ForwardBPS
			}
			if !math.IsInf(l.BackwardBPS, 1) {
				rt += float64(l.GradientBytes) * 8 / l.BackwardBPS
			}
			rtt = max(rtt, rt)
		}
	}
	fastest, opt := math.Inf(1), 0.0
	var tf, tb float64
	for _, p := range c.Compute {
		if p.Forward+p.Backward < fastest {
			fastest, tf, tb = p.Forward+p.Backward, p.Forward, p.Backward
		}
		opt = max(opt, p.Optimizer)
	}
	return scheduler.InFlightFor(rtt, tf, tb, opt)
}
