package trainer

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/scheduler/sim"
	"github.com/narrowband/narrowband/stages"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/engine"
)

// TestSimulatorPredictsShapedRun: the simulator, given the compute times a
// real in-process run measured and that run's link profile, predicts its
// step time within 15%.
func TestSimulatorPredictsShapedRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two shaped pipelines for a few seconds")
	}
	for _, sched := range []scheduler.Schedule{scheduler.GPipe, scheduler.OneFOneB} {
		t.Run("schedule="+sched.String(), func(t *testing.T) {
			c := tinyConfig(t)
			c.Run.Steps = 12
			c.Model.NLayer = 2
			c.Pipeline.Stages = 2
			c.Pipeline.Schedule = sched
			c.Train.BatchSize = 16
			c.Train.MicroBatches = 4
			c.Train.EvalInterval = 0
			c.Train.EvalBatches = 1
			c.Network.BandwidthMbps = 20
			c.Network.LatencyMs = 10
			col := &spanCollector{}
			rec := &stepTimes{}
			if _, err := Run(context.Background(), Options{Config: c, Out: t.TempDir(), Observer: engine.Observers{col, rec}}); err != nil {
				t.Fatal(err)
			}
			measured := rec.median(2)
			pred, err := Predict(c, ComputeFromSpans(col.spans, 2))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("measured step %.4f s, predicted %.4f s (ratio %.3f)\n%s", measured, pred.StepSeconds, pred.StepSeconds/measured, pred)
			if r := pred.StepSeconds / measured; r < 0.85 || r > 1.15 {
				t.Errorf("prediction %.4f s is %.0f%% off the measured %.4f s", pred.StepSeconds, 100*math.Abs(r-1), measured)
			}
		})
	}
}

// stepTimes records each step's wall time and replica-sum bytes.
type stepTimes struct {
	wall         []float64
	replicaBytes []int64
}

func (s *stepTimes) PublishStep(r metrics.StepRecord) {
	s.wall = append(s.wall, r.WallSeconds)
	s.replicaBytes = append(s.replicaBytes, r.ReplicaBytes)
}
func (s *stepTimes) PublishSpans([]metrics.Span) {}
func (s *stepTimes) PublishEvent(metrics.Event)  {}

// median step duration, skipping the first skip steps (warm-up).
func (s *stepTimes) median(skip int) float64 {
	var d []float64
	for i := skip + 1; i < len(s.wall); i++ {
		d = append(d, s.wall[i]-s.wall[i-1])
	}
	sort.Float64s(d)
	if len(d) == 0 {
		panic(fmt.Sprintf("only %d steps recorded", len(s.wall)))
	}
	return d[len(d)/2]
}

// TestPredictAsync: simulate runs the async schedule without the sync
// runtime's barrier, at the depth the runtime would choose, over enough
// steps for a steady state; at 50 ms one way it keeps its 0 ms throughput
// where 1F1B loses most of it.
func TestPredictAsync(t *testing.T) {
	c := tinyConfig(t)
	c.Model.NLayer = 4
	c.Pipeline.Stages = 4
	c.Train.BatchSize = 16
	c.Train.MicroBatches = 4
	c.Network.BandwidthMbps = 60
	comp := make([]sim.Compute, 4)
	for i := range comp {
		comp[i] = sim.Compute{Forward: 0.012, Backward: 0.024, Optimizer: 0.005}
	}
	tps := map[string]float64{}
	for _, ms := range []float64{0, 50} {
		for _, kind := range []scheduler.Schedule{scheduler.OneFOneB, scheduler.Async} {
			c.Pipeline.Schedule = kind
			c.Network.LatencyMs = ms
			p, err := Predict(c, comp)
			if err != nil {
				t.Fatal(err)
			}
			if kind == scheduler.Async && (p.InFlight < 1 || p.Steps < minAsyncSteps) {
				t.Fatalf("async at %g ms: in_flight %d over %d steps", ms, p.InFlight, p.Steps)
			}
			t.Logf("%v at %g ms: %.0f tokens/s, in_flight %d, bubble %.0f%%", kind, ms, p.TokensPerSecond, p.InFlight, 100*p.Bubble)
			tps[fmt.Sprintf("%v@%g", kind, ms)] = p.TokensPerSecond
		}
	}
	if r := tps["async@50"] / tps["async@0"]; r < 0.9 {
		t.Errorf("async keeps %.2f× of its 0 ms throughput at 50 ms, want ≥ 0.9×", r)
	}
	if tps["async@50"] <= 2*tps["1f1b@50"] {
		t.Errorf("async %.0f tokens/s at 50 ms is not well above 1F1B's %.0f", tps["async@50"], tps["1f1b@50"])
	}
}

// TestSimulatorPredictsReplicas: for 1 stage × 2 replicas and 2 stages × 2
// replicas on shaped links (the chain's links with the base profile), the
// simulator, given the compute times the run measured, predicts the
// measured step time, and the replica traffic to the byte.
func TestSimulatorPredictsReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two shaped pipelines with replicas for a few seconds")
	}
	for _, S := range []int{1, 2} {
		t.Run(fmt.Sprintf("stages=%d/replicas=2", S), func(t *testing.T) {
			c := tinyConfig(t)
			c.Run.Steps = 12
			c.Model.NLayer = 2
			c.Pipeline.Stages = S
			c.Pipeline.Replicas = 2
			c.Train.BatchSize = 16
			c.Train.MicroBatches = 4
			c.Train.EvalInterval = 0
			c.Train.EvalBatches = 1
			c.Network.BandwidthMbps = 20
			c.Network.LatencyMs = 10
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			col := &spanCollector{}
			rec := &stepTimes{}
			if _, err := Run(context.Background(), Options{Config: c, Out: t.TempDir(), Observer: engine.Observers{col, rec}}); err != nil {
				t.Fatal(err)
			}
			measured := rec.median(2)
			pred, err := Predict(c, ComputeFromSpans(col.spans, S))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("measured step %.4f s (%.0f tokens/s), predicted %.4f s (%.0f tokens/s): ratio %.3f (predicted/measured tokens/s %.3f)\n%s",
				measured, float64(c.Train.BatchSize*c.Model.BlockSize)/measured, pred.StepSeconds, pred.TokensPerSecond,
				pred.StepSeconds/measured, measured/pred.StepSeconds, pred)
			if r := pred.StepSeconds / measured; r < 0.8 || r > 1.2 {
				t.Errorf("prediction %.4f s is %.0f%% off the measured %.4f s", pred.StepSeconds, 100*math.Abs(r-1), measured)
			}
			for i, n := range rec.replicaBytes {
				if n != pred.ReplicaBytesPerStep {
					t.Fatalf("step %d: %d bytes of replica sums, predicted %d", i+1, n, pred.ReplicaBytesPerStep)
				}
			}
		})
	}
}

// TestPredictReplicas: simulate projects replicas without running
// anything: the busiest lane's share of the micro-batches, each stage's
// raw fp32 gradient (4 bytes a parameter and a frame header per 16 Ki
// floats of each tensor) on each chain link each way, the chain's time on
// the base [network] profile, and with replicas = 1 the plain pipeline.
func TestPredictReplicas(t *testing.T) {
	c := tinyConfig(t)
	c.Pipeline.Stages = 2
	c.Train.BatchSize = 16
	c.Train.MicroBatches = 4
	c.Network.BandwidthMbps = 20
	c.Network.LatencyMs = 10
	comp := []sim.Compute{{Forward: 0.002, Backward: 0.004, Optimizer: 0.001}, {Forward: 0.002, Backward: 0.004, Optimizer: 0.001}}
	plain, err := Predict(c, comp)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Replicas != 0 || plain.ReplicaBytesPerStep != 0 || strings.Contains(plain.String(), "gradient sum") {
		t.Errorf("replicas = 1 projects a swarm: %+v", plain)
	}
	layout, err := engine.Layout(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, R := range []int{2, 4} {
		c.Pipeline.Replicas = R
		p, err := Predict(c, comp)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for i, g := range p.ReplicaGradientBytes {
			r := layout.Range(i)
			params := stages.StageParams(c.Model, r.Lo, r.Hi, layout.First(i), layout.Last(i))
			if g < 4*params || g > 4*params+4*params/100 {
				t.Errorf("R=%d stage %d: %d gradient bytes a link, want 4 × %d parameters and headers", R, i, g, params)
			}
			total += 2 * int64(R-1) * g
		}
		slowest := p.ReplicaGradientBytes[p.ReplicaSumStage]
		if floor := float64(slowest)*8/20e6 + float64(2*(R-1))*0.010; p.ReplicaSumSeconds < floor {
			t.Errorf("R=%d: sum %.4f s, less than one gradient's time and 2(R−1) latencies (%.4f s)", R, p.ReplicaSumSeconds, floor)
		}
		if p.Replicas != R || p.LaneMicro != 4/R || p.ReplicaBytesPerStep != total || p.StepSeconds < p.LaneStepSeconds {
			t.Errorf("R=%d: replicas %d, lane micro-batches %d, %d B a step (want %d), step %.4f s, lanes %.4f s",
				R, p.Replicas, p.LaneMicro, p.ReplicaBytesPerStep, total, p.StepSeconds, p.LaneStepSeconds)
		}
	}
}
