package trainer

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
)

// tcConfig is the tiny model with the transform codec on its links.
func tcConfig(t *testing.T, stages int) config.Config {
	t.Helper()
	c := tinyConfig(t)
	c.Run.Steps = 8
	c.Model.NLayer = stages
	c.Pipeline.Stages = stages
	c.Compression.Method = compression.MethodSubspaceTC
	c.Compression.Rank = 16
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSubspaceTCTrains: the transform codec drives real pipelines of 2 and
// 4 stages (on 4, the ids cross the middle links both ways): the run
// trains like the same constrained model with exact fp32 links (within
// 1% on every logged loss of the tiny model), is really quantized (the
// losses differ), and its frames, every header and id counted, are many
// times smaller than fp32.
func TestSubspaceTCTrains(t *testing.T) {
	for _, S := range []int{2, 4} {
		t.Run(map[int]string{2: "2-stages", 4: "4-stages"}[S], func(t *testing.T) {
			c := tcConfig(t, S)
			dir := t.TempDir()
			sum := runTiny(t, c, dir)
			got := losses(t, dir)
			pipeline.ConstrainOnly = true
			c.Compression.Method = compression.MethodSubspace
			c.Compression.Precision = compression.FP32
			ref, _ := stateOf(t, c)
			pipeline.ConstrainOnly = false
			if len(got) != len(ref) {
				t.Fatalf("%d loss values, the exact run %d", len(got), len(ref))
			}
			same := true
			for i := range ref {
				if d := math.Abs(got[i]-ref[i]) / ref[i]; d > 0.01 {
					t.Errorf("loss value %d: subspace-tc %v, exact links %v (%.2f%% apart)", i, got[i], ref[i], 100*d)
				}
				same = same && got[i] == ref[i]
			}
			if same {
				t.Error("subspace-tc trained bit-identically to exact links: nothing was quantized")
			}
			// fp32 is 4·n_embd = 128 bytes per token; k=16 coefficients as
			// fp32 alone would be 8×.
			if sum.CompressionRatioForward < 10 || sum.CompressionRatioBackward < 10 {
				t.Errorf("compression %.1f× forward, %.1f× backward: want more than 10× from entropy-coded coefficients", sum.CompressionRatioForward, sum.CompressionRatioBackward)
			}
			t.Logf("%d stages: %.2f / %.2f B/token (%.1f× / %.1f×)", S, sum.WireBytesPerTokenForward, sum.WireBytesPerTokenBackward, sum.CompressionRatioForward, sum.CompressionRatioBackward)
		})
	}
}

// TestSubspaceTCTransportsEqual: the coders' state evolves only with the
// messages, in the schedule's order, so four WebRTC peer processes train
// bit-identically to the in-process pipeline.
func TestSubspaceTCTransportsEqual(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four WebRTC peer processes")
	}
	c := tcConfig(t, 4)
	c.Run.Steps = 6
	c.Train.Threads = 1
	inLoss, inState := stateOf(t, c)
	c.Pipeline.Transport = "webrtc"
	rtLoss, rtState := stateOf(t, c)
	for i := range inLoss {
		if rtLoss[i] != inLoss[i] {
			t.Errorf("loss value %d: webrtc %v, in-process %v", i, rtLoss[i], inLoss[i])
		}
	}
	equalStates(t, inState, rtState)
}

// TestSubspaceTCResume: the coders' state is in the checkpoint, so a run
// stopped after step 4 and resumed continues exactly (a resume that reset
// the coders would code the next steps differently).
func TestSubspaceTCResume(t *testing.T) {
	c := tcConfig(t, 2)
	c.Train.CheckpointInterval = 2
	whole := t.TempDir()
	runTiny(t, c, whole)
	st, err := LoadState(filepath.Join(whole, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if !hasTensor(st, "optim.codec.s0.enc_next") || !hasTensor(st, "optim.codec.s1.dec_prev") {
		t.Fatal("the state file lacks the coders' state")
	}
	broken := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Run(ctx, Options{Config: c, Out: broken, Observer: &stopAfter{n: 5, cancel: cancel}})
	if _, err := Run(context.Background(), Options{Config: c, Out: broken, Resume: broken}); err != nil {
		t.Fatal(err)
	}
	lw, lr := losses(t, whole), losses(t, broken)
	if len(lw) != len(lr) {
		t.Fatalf("resumed run logged %d loss values, uninterrupted %d", len(lr), len(lw))
	}
	for i := range lw {
		if lw[i] != lr[i] {
			t.Errorf("value %d: resumed %v, uninterrupted %v", i, lr[i], lw[i])
		}
	}
	got, err := LoadState(filepath.Join(broken, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	equalStates(t, st, got)
}

// TestSubspaceTCRedoIsExact: frames corrupted mid-run on both links of a
// 3-stage pipeline (the second carries ids both ways) are caught, the step
// is redone from the coders' snapshots at its start, and the run ends with
// the clean run's weights, bit for bit.
func TestSubspaceTCRedoIsExact(t *testing.T) {
	c := tcConfig(t, 3)
	_, clean := stateOf(t, c)
	c.Faults.MaxRejects = 100
	c.Faults.Events = []config.FaultEvent{{AtStep: 4, Kind: "corrupt", Stage: 0, Frames: 3}, {AtStep: 6, Kind: "corrupt", Stage: 1, Frames: 2}}
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	if sum.RejectedFrames < 2 || sum.StepsRedone < 2 {
		t.Fatalf("rejected_frames = %d, steps_redone = %d: the corruption went unnoticed", sum.RejectedFrames, sum.StepsRedone)
	}
	got, err := LoadState(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	equalStates(t, clean, got)
}

// TestSubspaceTCKilledStageIsExact is the kill test for this
// codec: a WebRTC run of 4 stages and a spare; stage 2's process is killed
// at step 7; the spare takes the stage over from the snapshot of step 4
// (weights, moments and the coders' state of all four stages), every stage
// rolls back, and the run ends bit-identical to the clean run.
func TestSubspaceTCKilledStageIsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five WebRTC peer processes and kills one")
	}
	c := rtcChaosConfig(t, 4, 10)
	c.Compression.Method = compression.MethodSubspaceTC
	c.Compression.Rank = 16
	c.Pipeline.Transport = "inproc"
	cleanLoss, clean := stateOf(t, c)
	killStage2AtStep7(&c)
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	if sum.Failures != 1 || sum.Recoveries != 1 || len(sum.FaultLog) != 1 || sum.FaultLog[0].RolledBackTo != 4 {
		t.Fatalf("failures %d, recoveries %d, log %+v: want the one kill, rolled back to step 4", sum.Failures, sum.Recoveries, sum.FaultLog)
	}
	got, err := LoadState(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	equalStates(t, clean, got)
	gotLoss := losses(t, dir)
	if n := len(cleanLoss); len(gotLoss) < 1 || gotLoss[len(gotLoss)-1] != cleanLoss[n-1] {
		t.Errorf("last loss %v, clean run %v", gotLoss[len(gotLoss)-1], cleanLoss[n-1])
	}
}

// TestSubspaceTCMeetsByteBudget: with compression.target_bytes_per_token
// each sender steers its step until its frames (every byte counted, as the
// summary counts them) cost the budget; the run reports the steps it
// moved to as codec_step events.
func TestSubspaceTCMeetsByteBudget(t *testing.T) {
	c := tcConfig(t, 2)
	c.Run.Steps = 24
	c.Train.EvalInterval = 0
	for _, target := range []float64{2.5, 6} {
		c.Compression.TargetBytesPerToken = target
		dir := t.TempDir()
		sum := runTiny(t, c, dir)
		for name, got := range map[string]float64{"forward": sum.WireBytesPerTokenForward, "backward": sum.WireBytesPerTokenBackward} {
			if math.Abs(got-target)/target > 0.15 {
				t.Errorf("budget %g B/token: %s frames cost %.3f B/token", target, name, got)
			}
		}
		if k := kindsOf(t, dir); k["codec_step"] < 2 {
			t.Errorf("budget %g: %d codec_step events, want the steps of both directions reported", target, k["codec_step"])
		}
		t.Logf("budget %g B/token: %.3f forward, %.3f backward", target, sum.WireBytesPerTokenForward, sum.WireBytesPerTokenBackward)
	}
}

// TestTiedPrecision: the tied-embedding gradient exchange coded as bf16 or
// int8 keeps the first stage's embedding and the last stage's head bit for
// bit the same copy (the driver checks it whenever it gathers the state,
// so the run would fail otherwise), costs what its format promises per
// token, and trains like the exact exchange (within 1% on every loss of the
// tiny model), with and without the transform codec on the boundary.
func TestTiedPrecision(t *testing.T) {
	for _, method := range []compression.Method{compression.MethodNone, compression.MethodSubspaceTC} {
		c := tcConfig(t, 2)
		c.Compression.Method = method
		c.Train.CheckpointInterval = 4
		ref := t.TempDir()
		refSum := runTiny(t, c, ref)
		refLoss := losses(t, ref)
		for _, p := range []compression.Precision{compression.BF16, compression.Int8} {
			c.Compression.TiedPrecision = p
			dir := t.TempDir()
			sum := runTiny(t, c, dir)
			got := losses(t, dir)
			for i := range refLoss {
				if d := math.Abs(got[i]-refLoss[i]) / refLoss[i]; d > 0.01 {
					t.Errorf("%v, tied %v: loss value %d %v vs %v with the exact exchange", method, p, i, got[i], refLoss[i])
				}
			}
			want := map[compression.Precision]float64{compression.BF16: 1.95, compression.Int8: 3.5}[p]
			if r := refSum.TiedBytesPerToken / sum.TiedBytesPerToken; r < want {
				t.Errorf("%v, tied %v: %.2f B/token against %.2f in fp32 (%.2f×), want at least %.1f× fewer", method, p, sum.TiedBytesPerToken, refSum.TiedBytesPerToken, r, want)
			}
			t.Logf("%v, tied %v: %.2f B/token (fp32 %.2f)", method, p, sum.TiedBytesPerToken, refSum.TiedBytesPerToken)
		}
	}
}
