package trainer

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
)

// codecRun is a 2 stages × 2 replicas run of the tiny model, long enough
// for the loss to settle (200 steps: 5.51 → about 3.2 nats), with the
// replicas' sum coded by m.
func codecRun(t *testing.T, m compression.ReduceMethod, subspace bool) config.Config {
	c := tinyConfig(t)
	c.Run.Steps = 200
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Train.WarmupSteps = 10
	c.Train.EvalInterval = 100
	c.Train.EvalBatches = 8
	c.Pipeline.Stages = 2
	c.Pipeline.Replicas = 2
	if subspace {
		c.Compression.Method = compression.MethodSubspace
		c.Compression.Rank = 8
	}
	c.Compression.Replicas.Method = m
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

type codecResult struct {
	val, first, last float64 // final held-out loss; first step's and mean of the last 20 steps' training loss
	ratio            float64 // fp32 bytes over wire bytes of the replicas' sum
	perStep          float64
}

func runCodec(t *testing.T, c config.Config) codecResult {
	t.Helper()
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	res := codecResult{val: sum.FinalValLoss, first: recs[0].Loss, ratio: sum.ReplicaCompressionRatio, perStep: sum.ReplicaBytesPerStep}
	for _, r := range recs[len(recs)-20:] {
		res.last += r.Loss / 20
	}
	for _, r := range recs {
		// Every step codes the same tensors into the same frames.
		if r.ReplicaBytes != recs[0].ReplicaBytes || r.ReplicaRawBytes != recs[0].ReplicaRawBytes {
			t.Errorf("step %d: %d replica bytes (%d raw), step 1 had %d (%d)", r.Step, r.ReplicaBytes, r.ReplicaRawBytes, recs[0].ReplicaBytes, recs[0].ReplicaRawBytes)
			break
		}
	}
	if sum.ReplicaBytesPerStep != float64(recs[0].ReplicaBytes) {
		t.Errorf("summary: %v replica bytes a step, step records %d", sum.ReplicaBytesPerStep, recs[0].ReplicaBytes)
	}
	// What the simulator counts (pipeline.ReplicaSumBytes, from the
	// tensors' shapes) is what the run sent: every stage's chain link,
	// both ways.
	layout, err := engine.Layout(c)
	if err != nil {
		t.Fatal(err)
	}
	perLink, _ := pipeline.ReplicaSumBytes(c, layout)
	var want int64
	for _, b := range perLink {
		want += 2 * int64(c.Pipeline.Replicas-1) * b
	}
	if recs[0].ReplicaBytes != want {
		t.Errorf("the run sent %d replica bytes a step, pipeline.ReplicaSumBytes counts %d", recs[0].ReplicaBytes, want)
	}
	return res
}

// TestReplicaCodecsTrain: each codec of [compression.replicas] trains a
// 2 stages × 2 replicas run as the exact sum does, within a stated gap of
// its final held-out loss, for the bytes it saves. Measured on this tiny
// model (d = 32, 200 steps) against none's 3.2516: fp16 3.2519 (+0.008%),
// int8 3.2564 (+0.15%), powersgd rank 4 3.3589 (+3.3%; its factors are an
// eighth of the model's width here); the tolerances below are about 12×,
// 3× and 1.5× those. The sum's bytes shrink by 1.98× (fp16), 3.69× (int8)
// and 5.56× (powersgd: 32-wide matrices give rank-4 factors little room;
// at the quickstart's d = 256 it is 39×, docs/swarm.md). The runs
// finishing at all says the replicas stayed bit-identical: the driver
// compares their gradients' sums of squares every step and their state
// digests and tied copies at the end (TestDriverCatchesUndecodedTotal
// shows it catching a last replica that kept its undecoded total).
//
// Under the subspace codec the constrained weights' gradients travel as
// k = 8 coefficients instead of d = 32 values, so even none sends 1.64×
// less (and still trains as 2 × 1 does: TestReplicasWithStatelessCodecs),
// and the other codecs code those coefficients (gaps −0.001%, +0.007%,
// +0.56%).
func TestReplicaCodecsTrain(t *testing.T) {
	for _, sub := range []bool{false, true} {
		t.Run(fmt.Sprintf("subspace=%v", sub), func(t *testing.T) {
			ref := runCodec(t, codecRun(t, compression.ReduceNone, sub))
			t.Logf("none: held-out %.4f, training %.4f → %.4f, %.0f bytes a step, %.2f× under fp32", ref.val, ref.first, ref.last, ref.perStep, ref.ratio)
			wantNone := [2]float64{0.99, 1.0}
			if sub {
				wantNone = [2]float64{1.6, 1.7}
			}
			if ref.ratio < wantNone[0] || ref.ratio > wantNone[1] {
				t.Errorf("none: %.3f× under fp32, want %g..%g", ref.ratio, wantNone[0], wantNone[1])
			}
			for _, tc := range []struct {
				m      compression.ReduceMethod
				gap    float64 // relative, of the final held-out loss
				lo, hi float64 // the bytes' ratio to none's
			}{
				{compression.ReduceFP16, 0.001, 1.95, 2.0},
				{compression.ReduceInt8, 0.005, 3.6, 3.77},
				{compression.ReducePowerSGD, 0.05, 3.5, 6},
			} {
				t.Run(fmt.Sprintf("method=%v", tc.m), func(t *testing.T) {
					got := runCodec(t, codecRun(t, tc.m, sub))
					gap := (got.val - ref.val) / ref.val
					vsNone := ref.perStep / got.perStep
					t.Logf("%v: held-out %.4f (%+.3f%% from none), training %.4f → %.4f, %.0f bytes a step, %.2f× under none, %.2f× under fp32", tc.m, got.val, 100*gap, got.first, got.last, got.perStep, vsNone, got.ratio)
					if !(got.last < got.first-1.5) {
						t.Errorf("training loss %.4f → %.4f: it did not fall", got.first, got.last)
					}
					if math.Abs(gap) > tc.gap {
						t.Errorf("final held-out loss %.4f, none's %.4f: %+.3f%%, want within ±%g%%", got.val, ref.val, 100*gap, 100*tc.gap)
					}
					if vsNone < tc.lo || vsNone > tc.hi {
						t.Errorf("%.3f× fewer bytes than none, want %g..%g", vsNone, tc.lo, tc.hi)
					}
				})
			}
		})
	}
}

// TestReplicaCodecsResume: error-feedback residuals and PowerSGD's warm
// start are not in the checkpoint (each replica's residual is its own,
// and a checkpoint holds one copy of a stage); a resumed run starts them
// afresh on every replica alike. So it still keeps its replicas
// bit-identical — the driver checked their gradients every step and their
// digests at the end, or the run would have failed — and it follows the
// uninterrupted run up to the checkpoint bit for bit, and closely after.
func TestReplicaCodecsResume(t *testing.T) {
	for _, m := range []compression.ReduceMethod{compression.ReduceInt8, compression.ReducePowerSGD} {
		t.Run(fmt.Sprintf("method=%v", m), func(t *testing.T) {
			c := tinyConfig(t)
			c.Run.Steps = 12
			c.Pipeline.Stages = 2
			c.Pipeline.Replicas = 2
			c.Compression.Replicas.Method = m
			whole := t.TempDir()
			runTiny(t, c, whole)
			c.Train.CheckpointInterval = 3
			broken := t.TempDir()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, err := Run(ctx, Options{Config: c, Out: broken, Observer: &stopAfter{n: 4, cancel: cancel}}); err == nil {
				t.Fatal("interrupted run reported success")
			}
			if _, err := Run(context.Background(), Options{Config: c, Out: broken, Resume: broken}); err != nil {
				t.Fatal(err)
			}
			rw, err := metrics.ReadJSONL(filepath.Join(whole, "metrics.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			rr, err := metrics.ReadJSONL(filepath.Join(broken, "metrics.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			lw, lr := map[int]float64{}, map[int]float64{}
			for _, r := range rw {
				lw[r.Step] = r.Loss
			}
			for _, r := range rr {
				lr[r.Step] = r.Loss // a redone step's last record
			}
			differ := 0
			for step := 1; step <= c.Run.Steps; step++ {
				w, r := lw[step], lr[step]
				switch {
				case step <= 3 && math.Float64bits(w) != math.Float64bits(r):
					t.Errorf("step %d, before the checkpoint: resumed %v, uninterrupted %v", step, r, w)
				case math.Abs(r-w) > 0.01*w:
					t.Errorf("step %d: resumed %v, uninterrupted %v: more than 1%% apart", step, r, w)
				}
				if math.Float64bits(w) != math.Float64bits(r) {
					differ++
				}
			}
			t.Logf("%v: %d of %d steps' losses differ after the resume (residuals and warm start restarted)", m, differ, c.Run.Steps)
			if differ == 0 {
				t.Error("the resumed run matched the uninterrupted one bit for bit: then the codec state is restored, and docs/swarm.md must say so")
			}
		})
	}
}

// TestSweepTableReplicas: a sweep of runs with replicas shows each run's
// replica-sum bytes a step and its ratio to fp32; one without reads as
// before.
func TestSweepTableReplicas(t *testing.T) {
	c := config.Default()
	plain := SweepResult{Values: map[string]string{"compression.replicas.method": `"none"`}, Summary: &metrics.Summary{FinalValLoss: 2.5}}
	if tab := SweepTable(c, []SweepResult{plain}); strings.Contains(tab, "replica sum") {
		t.Errorf("runs without replicas:\n%s", tab)
	}
	int8 := SweepResult{Values: map[string]string{"compression.replicas.method": `"int8"`}, Summary: &metrics.Summary{FinalValLoss: 2.5, ReplicaBytesPerStep: 7076840, ReplicaCompressionRatio: 3.757}}
	tab := SweepTable(c, []SweepResult{plain, int8})
	if !strings.Contains(tab, "| replica sum B/step | vs fp32 | wall s |") || !strings.Contains(tab, "| 7076840 | 3.76× |") {
		t.Errorf("runs with replicas:\n%s", tab)
	}
}

// TestReplicaCodecOverProcesses: the codec travels with the config to
// worker processes: 2 × 2 with the sum in PowerSGD (int8 on the links
// between stages), in four processes over loopback TCP, gives the same
// losses bit for bit as in goroutines.
func TestReplicaCodecOverProcesses(t *testing.T) {
	c := tinyConfig(t)
	c.Run.Steps = 10
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Pipeline.Stages = 2
	c.Pipeline.Replicas = 2
	c.Compression.Method = compression.MethodInt8
	c.Compression.Replicas.Method = compression.ReducePowerSGD
	c.Train.Threads = 1
	gdir := t.TempDir()
	ref := runTiny(t, c, gdir)
	inProc := losses(t, gdir)
	c.Pipeline.Processes = true
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	got := losses(t, dir)
	recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range recs[len(recs)-1].Stages {
		if st.PeakRSS <= 0 {
			t.Errorf("stage %d (%s) reported no process memory: not a process of its own", st.Stage, st.Peer)
		}
	}
	if len(got) != len(inProc) {
		t.Fatalf("%d losses in processes, %d in goroutines", len(got), len(inProc))
	}
	for i := range got {
		if math.Float64bits(got[i]) != math.Float64bits(inProc[i]) {
			t.Errorf("loss %d: %v in processes, %v in goroutines", i, got[i], inProc[i])
		}
	}
	if sum.ReplicaBytesPerStep != ref.ReplicaBytesPerStep || sum.ReplicaCompressionRatio < 4 {
		t.Errorf("replica sum: %v bytes a step (%.2f× under fp32) in processes, %v in goroutines; want the same, PowerSGD's", sum.ReplicaBytesPerStep, sum.ReplicaCompressionRatio, ref.ReplicaBytesPerStep)
	}
	t.Logf("powersgd over processes: %.1f× fewer bytes than fp32, %d losses the same", sum.ReplicaCompressionRatio, len(got))
}

// TestSwarmChurnWithReplicaCodecs is TestSwarmChurn with the sum coded: a
// replica joins (its residuals empty, its PowerSGD warm start the seed's,
// its state downloaded and the decoded sums replayed), one leaves and one
// is killed, and the run goes on with every replica of a stage holding
// the same bits — the driver checks the joiner's digest at admission and
// every replica's gradient norm every step — and trains as the calm run
// with the same codec does.
func TestSwarmChurnWithReplicaCodecs(t *testing.T) {
	for _, m := range []compression.ReduceMethod{compression.ReduceInt8, compression.ReducePowerSGD} {
		t.Run(fmt.Sprintf("method=%v", m), func(t *testing.T) {
			c := swarmConfig(t)
			c.Compression.Replicas.Method = m
			swarmChurn(t, c)
		})
	}
}

// TestSimulatorPredictsCodedReplicas is TestSimulatorPredictsReplicas with
// the sum coded: on shaped links (20 Mbit/s, 10 ms) a 2 × 2 run with its
// sum in int8, or in PowerSGD's two passes, takes the step time the
// simulator predicts from the run's measured compute, and sends the
// replica bytes it predicts to the byte.
func TestSimulatorPredictsCodedReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two shaped pipelines with replicas for a few seconds")
	}
	for _, m := range []compression.ReduceMethod{compression.ReduceInt8, compression.ReducePowerSGD} {
		t.Run(fmt.Sprintf("method=%v", m), func(t *testing.T) {
			c := tinyConfig(t)
			c.Run.Steps = 12
			c.Pipeline.Stages = 2
			c.Pipeline.Replicas = 2
			c.Train.BatchSize = 16
			c.Train.MicroBatches = 4
			c.Train.EvalInterval = 0
			c.Train.EvalBatches = 1
			c.Network.BandwidthMbps = 20
			c.Network.LatencyMs = 10
			c.Compression.Replicas.Method = m
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
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
			t.Logf("measured step %.4f s, predicted %.4f s: ratio %.3f\n%s", measured, pred.StepSeconds, pred.StepSeconds/measured, pred)
			if r := pred.StepSeconds / measured; r < 0.8 || r > 1.2 {
				t.Errorf("prediction %.4f s is %.0f%% off the measured %.4f s", pred.StepSeconds, 100*math.Abs(r-1), measured)
			}
			for i, n := range rec.replicaBytes {
				if n != pred.ReplicaBytesPerStep {
					t.Fatalf("step %d: %d bytes of replica sums, predicted %d", i+1, n, pred.ReplicaBytesPerStep)
				}
			}
			wantPasses := 1
			if m == compression.ReducePowerSGD {
				wantPasses = 2
			}
			if pred.ReplicaPasses != wantPasses || !strings.Contains(pred.String(), "gradient sum (chain of 2, "+c.Compression.Replicas.Label()) {
				t.Errorf("prediction: %d passes (want %d), says\n%s", pred.ReplicaPasses, wantPasses, pred)
			}
		})
	}
}
