package sim

import (
	"math"
	"testing"

	"github.com/narrowband/narrowband/scheduler"
)

func swarmLane(S, M int) Config {
	return Config{Schedule: scheduler.OneFOneB, Stages: S, Micro: M, Steps: 3,
		Compute:       []Compute{{Forward: 0.01, Backward: 0.02, Optimizer: 0.005}},
		Links:         []Link{{ForwardBPS: 60e6, BackwardBPS: 60e6, Latency: 0.025, ActivationBytes: 30_000, GradientBytes: 30_000}},
		Embedding:     Embedding{BPS: math.Inf(1), Bytes: 1000},
		TokensPerStep: int64(M) * 2048}
}

// TestSwarmOneReplicaIsThePipeline: with one replica per stage the swarm is
// the plain pipeline.
func TestSwarmOneReplicaIsThePipeline(t *testing.T) {
	lane := swarmLane(4, 8)
	plain, err := Run(lane)
	if err != nil {
		t.Fatal(err)
	}
	sw, err := RunSwarm(Swarm{Lane: lane, Replicas: []int{1}, GradientBytes: []int64{4 << 20}, ReplicaBPS: 60e6})
	if err != nil {
		t.Fatal(err)
	}
	if sw.StepTime != plain.StepTime || sw.TokensPerSecond != plain.TokensPerSecond {
		t.Errorf("1 replica: %v s, %v tokens/s; the pipeline %v s, %v tokens/s", sw.StepTime, sw.TokensPerSecond, plain.StepTime, plain.TokensPerSecond)
	}
}

// TestSwarmScalesUntilTheAllReduce: more replicas split the micro-batches
// (faster), and the all-reduce costs 2(R-1) hops of a 1/R slice; a
// 32-stage × 8-replica swarm projects.
func TestSwarmScalesUntilTheAllReduce(t *testing.T) {
	lane := swarmLane(4, 16)
	var prev float64
	for _, R := range []int{1, 2, 4} {
		sw, err := RunSwarm(Swarm{Lane: lane, Replicas: []int{R}, GradientBytes: []int64{2 << 20}, ReplicaBPS: 60e6, ReplicaLatency: 0.025})
		if err != nil {
			t.Fatal(err)
		}
		want := 0.0
		if R > 1 {
			want = float64(2*(R-1)) * (0.025 + float64(2<<20)/float64(R)*8/60e6)
		}
		if math.Abs(sw.AllReduce-want) > 1e-12 || sw.LaneMicro != 16/R {
			t.Errorf("R=%d: all-reduce %v s (want %v), lane micro %d", R, sw.AllReduce, want, sw.LaneMicro)
		}
		if R > 1 && sw.TokensPerSecond <= prev {
			t.Errorf("R=%d: %v tokens/s, no faster than R=%d's %v", R, sw.TokensPerSecond, R/2, prev)
		}
		prev = sw.TokensPerSecond
	}
	big := swarmLane(32, 64)
	sw, err := RunSwarm(Swarm{Lane: big, Replicas: []int{8}, GradientBytes: []int64{64 << 20}, ReplicaBPS: 80e6, ReplicaLatency: 0.03})
	if err != nil || !(sw.TokensPerSecond > 0) {
		t.Fatalf("32 stages × 8 replicas: %+v, %v", sw, err)
	}
	t.Logf("32 stages × 8 replicas, 64 micro-batches, 80 Mbit/s: lane step %.2f s + all-reduce %.2f s = %.0f tokens/s", sw.LaneStepTime, sw.AllReduce, sw.TokensPerSecond)
}
