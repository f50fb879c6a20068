package sim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/narrowband/narrowband/scheduler"
)

// swarmLane is a sync lane with the runtime's barrier at the optimizer step.
func swarmLane(S, M int) Config {
	return Config{Schedule: scheduler.OneFOneB, Stages: S, Micro: M, Steps: 3,
		Compute:       []Compute{{Forward: 0.01, Backward: 0.02, Optimizer: 0.005}},
		Links:         []Link{{ForwardBPS: 60e6, BackwardBPS: 60e6, Latency: 0.025, ActivationBytes: 30_000, GradientBytes: 30_000}},
		Embedding:     Embedding{BPS: math.Inf(1), Bytes: 1000},
		Barrier:       true,
		TokensPerStep: int64(M) * 2048}
}

// chainReference is the chain sum worked out frame by frame: 2(R−1) link
// directions in a row (up 0→1→…→R−1, then back down), each a FIFO
// serializer plus latency as in Run, and every frame passed on as soon as
// it has arrived; the sum is done when the last frame reaches replica 0.
// Slow and obviously the runtime's order; ChainSum is its closed form.
func chainReference(R int, frames []int64, bps, latency float64) float64 {
	free := make([]float64, 2*(R-1))
	done := 0.0
	for _, n := range frames {
		d := float64(n) * 8 / bps
		t := 0.0 // every frame is ready at replica 0 when the sum starts
		for h := range free {
			free[h] = math.Max(t, free[h]) + d
			t = free[h] + latency
		}
		done = math.Max(done, t)
	}
	return done
}

// TestChainSum: the chain's closed form is the frame-by-frame chain, for
// frames of any sizes in any order (the runtime cuts each tensor into
// frames of its own, so small ones sit between full ones): one gradient's
// time plus 2R−3 hops of the largest frame plus 2(R−1) latencies; without
// frames every hop is the whole gradient; twice the gradient costs one
// more gradient's serialization, not R of them.
func TestChainSum(t *testing.T) {
	const bps, lat, full = 60e6, 0.025, 65_566
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []int64 {
		f := make([]int64, n)
		for i := range f {
			f[i] = 30 + rng.Int64N(full-30)
		}
		f[rng.IntN(n)] = full
		return f
	}
	fulls := func(n int, tail ...int64) []int64 {
		f := make([]int64, n)
		for i := range f {
			f[i] = full
		}
		return append(f, tail...)
	}
	for _, tc := range []struct {
		name   string
		R      int
		frames []int64
	}{
		{"equal", 2, fulls(10)}, {"equal", 3, fulls(10)}, {"equal", 8, fulls(100)}, {"equal", 32, fulls(7)},
		{"short last", 8, fulls(10, full/2)},
		{"short first", 8, append([]int64{100, 4126}, fulls(10)...)},
		{"full first", 4, append([]int64{full}, 4126, 158, 4126, 4126)},
		{"one frame", 4, []int64{6_000_000}},
		{"random", 2, random(50)}, {"random", 8, random(300)}, {"random", 16, random(7)},
	} {
		t.Run(fmt.Sprintf("%s/R=%d", tc.name, tc.R), func(t *testing.T) {
			var g, big int64
			for _, n := range tc.frames {
				g, big = g+n, max(big, n)
			}
			got, want := ChainSum(tc.R, g, big, bps, lat), chainReference(tc.R, tc.frames, bps, lat)
			if math.Abs(got-want) > 1e-9*want {
				t.Errorf("ChainSum %.6f s, frame by frame %.6f s", got, want)
			}
		})
	}
	// Unpipelined, every one of the 2(R−1) hops carries the whole gradient.
	if got, want := ChainSum(4, 6e6, 0, bps, lat), 6*(6e6*8/bps+lat); math.Abs(got-want) > 1e-12 {
		t.Errorf("one frame, R=4: %v s, want 6 × (gradient + latency) = %v s", got, want)
	}
	for _, R := range []int{2, 8, 32} {
		d := ChainSum(R, 2<<24, full, bps, lat) - ChainSum(R, 1<<24, full, bps, lat)
		if want := float64(1<<24) * 8 / bps; math.Abs(d-want) > 1e-9 {
			t.Errorf("R=%d: doubling the gradient adds %v s, want its serialization %v s", R, d, want)
		}
	}
	if got := ChainSum(5, 1<<30, full, math.Inf(1), lat); got != 8*lat {
		t.Errorf("unlimited links: %v s, want 2(R−1) latencies = %v s", got, 8*lat)
	}
	if ChainSum(1, 1<<30, full, bps, lat) != 0 || ChainSum(4, 0, full, bps, lat) != 0 {
		t.Error("one replica or nothing to sum should take no time")
	}
}

// TestSwarmOneReplicaIsThePipeline: with one replica per stage the swarm is
// the plain pipeline, to the bit.
func TestSwarmOneReplicaIsThePipeline(t *testing.T) {
	lane := swarmLane(4, 8)
	plain, err := Run(lane)
	if err != nil {
		t.Fatal(err)
	}
	sw, err := RunSwarm(Swarm{Lane: lane, Replicas: 1, GradientBytes: []int64{4 << 20}, FrameBytes: []int64{65_566}, ReplicaBPS: 60e6, ReplicaLatency: 0.025})
	if err != nil {
		t.Fatal(err)
	}
	if sw.StepTime != plain.StepTime || sw.TokensPerSecond != plain.TokensPerSecond || sw.ReplicaSum != 0 || sw.ReplicaBytes != 0 {
		t.Errorf("1 replica: %v s, %v tokens/s, sum %v s, %d B; the pipeline %v s, %v tokens/s",
			sw.StepTime, sw.TokensPerSecond, sw.ReplicaSum, sw.ReplicaBytes, plain.StepTime, plain.TokensPerSecond)
	}
}

// TestSwarmReplicasSplitTheMicroBatches: doubling the replicas halves each
// lane's micro-batches. A lane runs its share in the whole stage's order:
// under GPipe that is exactly the pipeline of the share; under 1F1B each
// replica holds about 1/R of the stage's in-flight micro-batches, so a
// lane is no faster than the pipeline of its share. Either way, with a
// free sum (unlimited, instant replica links) the tokens/s grow with R;
// with 60 Mbps replica links the step adds the chain's time, and the bytes
// are 2(R−1) gradients a stage.
func TestSwarmReplicasSplitTheMicroBatches(t *testing.T) {
	const M, S, grad = 16, 4, 2 << 20
	for _, kind := range []scheduler.Schedule{scheduler.GPipe, scheduler.OneFOneB} {
		lane := swarmLane(S, M)
		lane.Schedule = kind
		var prev float64
		for _, R := range []int{1, 2, 4, 8} {
			free, err := RunSwarm(Swarm{Lane: lane, Replicas: R, GradientBytes: []int64{grad}, ReplicaBPS: math.Inf(1)})
			if err != nil {
				t.Fatal(err)
			}
			share := lane
			share.Micro = M / R
			want, err := Run(share)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%v R=%d, free sum: lane of %d micro-batches %.4f s, the pipeline of %d %.4f s", kind, R, free.LaneMicro, free.StepTime, M/R, want.StepTime)
			if free.LaneMicro != M/R {
				t.Errorf("%v R=%d: %d micro-batches a lane, want %d", kind, R, free.LaneMicro, M/R)
			}
			if kind == scheduler.GPipe && math.Abs(free.StepTime-want.StepTime) > 1e-9 {
				t.Errorf("GPipe R=%d, free sum: step %v s; the pipeline of %d: %v s", R, free.StepTime, M/R, want.StepTime)
			}
			if free.StepTime < want.StepTime-1e-9 {
				t.Errorf("%v R=%d, free sum: step %v s, faster than the pipeline of %d (%v s)", kind, R, free.StepTime, M/R, want.StepTime)
			}
			if R > 1 && free.TokensPerSecond <= prev {
				t.Errorf("%v R=%d, free sum: %.0f tokens/s, no more than R=%d's %.0f", kind, R, free.TokensPerSecond, R/2, prev)
			}
			prev = free.TokensPerSecond

			sw, err := RunSwarm(Swarm{Lane: lane, Replicas: R, GradientBytes: []int64{grad}, FrameBytes: []int64{65_566}, ReplicaBPS: 60e6, ReplicaLatency: 0.025})
			if err != nil {
				t.Fatal(err)
			}
			sum := ChainSum(R, grad, 65_566, 60e6, 0.025)
			if sw.ReplicaSum != sum || sw.LaneStepTime != free.StepTime || sw.ReplicaBytes != int64(S*2*(R-1)*grad) {
				t.Errorf("%v R=%d: sum %v s (chain %v), lanes %v s (want %v), %d B (want %d)", kind, R, sw.ReplicaSum, sum, sw.LaneStepTime, free.StepTime, sw.ReplicaBytes, S*2*(R-1)*grad)
			}
			// Every stage's sum is alike here, and stage 0 finishes its
			// backwards last: the step waits for the whole of its sum.
			if d := sw.StepTime - (sw.LaneStepTime + sw.ReplicaSum); math.Abs(d) > 1e-9 {
				t.Errorf("%v R=%d: step %v s, want lanes %v + sum %v", kind, R, sw.StepTime, sw.LaneStepTime, sw.ReplicaSum)
			}
		}
	}
}

// TestSwarmSumOverlapsUpstream: a stage's sum runs as soon as its own
// backwards are done, beside the backwards still running upstream, so a
// big gradient on a later stage costs the step less than its sum — the
// last stage's too, since a swarm's ends exchange the tied gradient after
// their sums; on the first stage, which finishes last, all of it.
func TestSwarmSumOverlapsUpstream(t *testing.T) {
	lane := swarmLane(8, 8)
	const R = 2
	one := func(stage int) SwarmResult {
		g := make([]int64, 8)
		g[stage] = 600_000 // 80 ms at 60 Mbit/s
		sw, err := RunSwarm(Swarm{Lane: lane, Replicas: R, GradientBytes: g, FrameBytes: []int64{65_566}, ReplicaBPS: 60e6, ReplicaLatency: 0.025})
		if err != nil {
			t.Fatal(err)
		}
		return sw
	}
	for _, stage := range []int{4, 7} {
		if sw := one(stage); sw.StepTime < sw.LaneStepTime || sw.StepTime-sw.LaneStepTime > sw.ReplicaSum/2 {
			t.Errorf("sum on stage %d of 8: the step grows %.4f s, want under half its %.4f s sum", stage, sw.StepTime-sw.LaneStepTime, sw.ReplicaSum)
		}
	}
	if first := one(0); math.Abs(first.StepTime-first.LaneStepTime-first.ReplicaSum) > 1e-9 {
		t.Errorf("sum on stage 0 of 8: the step grows %.4f s, want all of its %.4f s sum", first.StepTime-first.LaneStepTime, first.ReplicaSum)
	}
}

func TestSwarmBadConfig(t *testing.T) {
	ok := Swarm{Lane: swarmLane(4, 8), Replicas: 2, GradientBytes: []int64{1 << 20}, FrameBytes: []int64{65_566}, ReplicaBPS: 60e6, ReplicaLatency: 0.025}
	async := ok
	async.Lane.Schedule, async.Lane.Barrier = scheduler.Async, false
	for name, mod := range map[string]func(s *Swarm){
		"no replicas":          func(s *Swarm) { s.Replicas = 0 },
		"more replicas than M": func(s *Swarm) { s.Replicas = 9 },
		"3 gradients, 4 stages": func(s *Swarm) {
			s.GradientBytes = []int64{1, 2, 3}
		},
		"negative gradient":  func(s *Swarm) { s.GradientBytes = []int64{-1} },
		"negative frame":     func(s *Swarm) { s.FrameBytes = []int64{-1} },
		"2 frames, 4 stages": func(s *Swarm) { s.FrameBytes = []int64{1, 2} },
		"zero bandwidth":     func(s *Swarm) { s.ReplicaBPS = 0 },
		"NaN bandwidth":      func(s *Swarm) { s.ReplicaBPS = math.NaN() },
		"negative latency":   func(s *Swarm) { s.ReplicaLatency = -0.001 },
		"sum set by hand":    func(s *Swarm) { s.Lane.ReplicaSum = []float64{1} },
		"lane set by hand":   func(s *Swarm) { s.Lane.Mine = make([]bool, 8) },
		"bad lane":           func(s *Swarm) { s.Lane.Steps = 0 },
		"async with replica": func(s *Swarm) { *s = async },
	} {
		t.Run(name, func(t *testing.T) {
			s := ok
			s.GradientBytes = append([]int64(nil), ok.GradientBytes...)
			mod(&s)
			if _, err := RunSwarm(s); !errors.Is(err, ErrBadConfig) {
				t.Errorf("RunSwarm: %v, want ErrBadConfig", err)
			}
		})
	}
	if _, err := RunSwarm(ok); err != nil {
		t.Errorf("the good swarm: %v", err)
	}
	for _, sum := range [][]float64{{1, 2}, {-1}, {math.Inf(1)}} {
		c := swarmLane(4, 8)
		c.ReplicaSum = sum
		if _, err := Run(c); !errors.Is(err, ErrBadConfig) {
			t.Errorf("ReplicaSum %v: %v, want ErrBadConfig", sum, err)
		}
	}
	for _, mine := range [][]bool{make([]bool, 8), {true, false}} {
		c := swarmLane(4, 8)
		c.Mine = mine
		if _, err := Run(c); !errors.Is(err, ErrBadConfig) {
			t.Errorf("Mine %v: %v, want ErrBadConfig", mine, err)
		}
	}
}

// TestSwarm32x8: a 32-stage × 8-replica swarm projects, and past a few
// replicas the fp32 sum of a big stage over 60 Mbit/s outweighs what the
// replicas save.
func TestSwarm32x8(t *testing.T) {
	big := swarmLane(32, 64)
	var tps [2]float64
	for i, R := range []int{1, 8} {
		sw, err := RunSwarm(Swarm{Lane: big, Replicas: R, GradientBytes: []int64{4 * 30_000_000}, FrameBytes: []int64{65_566}, ReplicaBPS: 60e6, ReplicaLatency: 0.03})
		if err != nil || !(sw.TokensPerSecond > 0) {
			t.Fatalf("32 stages × %d replicas: %+v, %v", R, sw, err)
		}
		tps[i] = sw.TokensPerSecond
		t.Logf("32 stages × %d replicas, 64 micro-batches, 30 M parameters a stage, 60 Mbit/s: lanes %.2f s + sum %.2f s → step %.2f s, %.0f tokens/s",
			R, sw.LaneStepTime, sw.ReplicaSum, sw.StepTime, sw.TokensPerSecond)
	}
	if tps[1] >= tps[0] {
		t.Errorf("8 replicas %.0f tokens/s, 1 replica %.0f: a 120 MB fp32 sum at 60 Mbit/s (16 s) should cost more than 7/8 of the lanes save", tps[1], tps[0])
	}
}

// TestGoldenReplicaSum: the timeline of lane 0 of a 1F1B swarm of 2
// replicas a stage, M=4 (micro-batches a and c here, in the whole stage's
// order), each stage summing for 3 units before the barrier ('='): the
// later stages sum while the earlier ones still run backwards, the ends
// exchange the tied gradient after their sums (zero time here), and the
// step waits for stage 0's.
func TestGoldenReplicaSum(t *testing.T) {
	c := Config{Schedule: scheduler.OneFOneB, Stages: 4, Micro: 4, Steps: 2, Compute: []Compute{{1, 2, 1}},
		Links: []Link{Unlimited}, Embedding: Embedding{BPS: math.Inf(1)}, Barrier: true,
		ReplicaSum: []float64{3}, Mine: []bool{true, false, true, false}}
	got := goldenRun(t, "1f1b S=4 M=4, lane 0 of 2 replicas, tf=1 tb=2 opt=1, barrier, replica sum 3 units a stage (= on the timeline), zero latency, unlimited bandwidth", c)
	checkGolden(t, filepath.Join("testdata", "1f1b_s4_m4_lane0of2_replicasum3.txt"), got)
}

// TestSwarmPasses: a sum in two passes (PowerSGD: P, then Q) costs its
// bytes once and the chain's hops and latencies twice.
func TestSwarmPasses(t *testing.T) {
	lane := swarmLane(2, 6)
	const R, grad, frame, bps, lat = 3, 4 << 20, 64 << 10, 60e6, 0.02
	one := Swarm{Lane: lane, Replicas: R, GradientBytes: []int64{grad}, FrameBytes: []int64{frame}, ReplicaBPS: bps, ReplicaLatency: lat}
	two := one
	two.Passes = 2
	a, err := RunSwarm(one)
	if err != nil {
		t.Fatal(err)
	}
	b, err := RunSwarm(two)
	if err != nil {
		t.Fatal(err)
	}
	c := float64(frame) * 8 / bps
	want := ChainSum(R, grad, frame, bps, lat) + float64(2*R-3)*c + float64(2*(R-1))*lat
	if math.Abs(b.ReplicaSum-want) > 1e-12 || a.ReplicaSum != ChainSum(R, grad, frame, bps, lat) {
		t.Errorf("one pass %v s, two %v s; want %v and %v", a.ReplicaSum, b.ReplicaSum, ChainSum(R, grad, frame, bps, lat), want)
	}
	if a.ReplicaBytes != b.ReplicaBytes {
		t.Errorf("bytes %d in one pass, %d in two: the passes share them", a.ReplicaBytes, b.ReplicaBytes)
	}
	if _, err := RunSwarm(Swarm{Lane: lane, Replicas: R, GradientBytes: []int64{grad}, ReplicaBPS: bps, Passes: -1}); err == nil {
		t.Error("Passes = -1 accepted")
	}
}
