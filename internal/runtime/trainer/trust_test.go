package trainer

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/ledger"
	"github.com/narrowband/narrowband/stages"
)

// trustConfig is a 2 stages × 3 replicas swarm of the tiny model in
// goroutines, so that a stage keeps two replicas after one is evicted.
func trustConfig(t *testing.T) config.Config {
	c := tinyConfig(t)
	c.Run.Steps = 12
	c.Train.BatchSize = 12
	c.Train.MicroBatches = 6
	c.Train.EvalInterval = 12
	c.Pipeline.Stages = 2
	c.Pipeline.Replicas = 3
	c.Faults.PeerTimeout = 4
	return c
}

// relDistance is the relative L2 distance of got's weights from want's.
func relDistance(t *testing.T, want, got *stages.State) float64 {
	t.Helper()
	byName := map[string][]float32{}
	for _, ts := range got.Tensors {
		byName[ts.Name] = ts.Data
	}
	var diff, norm float64
	for _, w := range want.Tensors {
		if strings.HasPrefix(w.Name, "optim.") {
			continue
		}
		g := byName[w.Name]
		if len(g) != len(w.Data) {
			t.Fatalf("%s: %d values, want %d", w.Name, len(g), len(w.Data))
		}
		for i := range w.Data {
			d := float64(w.Data[i]) - float64(g[i])
			diff += d * d
			norm += float64(w.Data[i]) * float64(w.Data[i])
		}
	}
	return math.Sqrt(diff / norm)
}

// TestSpotChecksCatchALiar: one replica of stage 0 of a 2 × 3 swarm
// starts lying at step 3 (its activations ×1.01 on half its
// micro-batches). With every output checked (verify.fraction = 1, so no
// lie slips through), its first lie is caught before the step's apply,
// it is evicted (verify.max_mismatches = 1), the step is redone by the
// other two, nothing rolls back, its key is recorded as faulty in the
// summary and the ledger, and the final weights are those of the same run
// without the liar within 1e-5 relative (the sums of the stage's
// gradients are added over two replicas instead of three from then on:
// another order, other last bits), and bit for bit those of a run in
// which the liar left cleanly just before it was caught.
func TestSpotChecksCatchALiar(t *testing.T) {
	t.Run("stages=2/replicas=3", func(t *testing.T) { catchALiar(t, trustConfig(t), 0) })
	// A middle stage: its input is the kept frame of a replica of stage
	// 0, passed to the checker over their own link.
	t.Run("stages=3/replicas=2", func(t *testing.T) {
		c := trustConfig(t)
		c.Model.NLayer = 3
		c.Pipeline.Stages, c.Pipeline.Replicas = 3, 2
		catchALiar(t, c, 1)
	})
}

// TestSpotChecksCatchALiarOverWebRTC is the 2 × 3 case on WebRTC peer
// processes: the kept inputs, the hashes and the eviction (a SIGKILL of
// the liar's process) go as they would between machines, and the
// ledger's fault names the liar's own key.
func TestSpotChecksCatchALiarOverWebRTC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six WebRTC peer processes, three times")
	}
	c := trustConfig(t)
	c.Pipeline.Transport = "webrtc"
	c.Train.Threads = 1
	catchALiar(t, c, 0)
}

func catchALiar(t *testing.T, c config.Config, stage int) {
	c.Verify.Fraction = 1
	honestDir := t.TempDir()
	honest := runTiny(t, c, honestDir)
	if v := honest.Swarm.Verify; v == nil || v.Checks == 0 || v.Failed != 0 {
		t.Fatalf("honest run: checks %+v, want some and none failed", v)
	}
	c.Faults.Events = []config.FaultEvent{{AtStep: 3, Kind: "lie", Stage: stage, Replica: c.Pipeline.Replicas - 1, Fraction: 0.5, Scale: 0.01}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	v := sum.Swarm.Verify
	t.Logf("checks %d, failed %d, bytes %d (control %d); faulty %+v; steps redone %d", v.Checks, v.Failed, v.Bytes, v.ControlBytes, v.Faulty, sum.StepsRedone)
	if stage > 0 && v.Bytes == 0 {
		t.Errorf("no check input crossed a link: a middle stage's checks recompute from the upstream sender's kept frames")
	}
	mm := events(t, dir, "verify_mismatch")
	ev := events(t, dir, "peer_evicted")
	if len(mm) != 1 || len(ev) != 1 {
		t.Fatalf("%d verify_mismatch and %d peer_evicted events, want 1 and 1", len(mm), len(ev))
	}
	t.Logf("detected at step %d (lying from step 3): %v", mm[0].Step, mm[0].Detail)
	// Every failed check is the liar's, in the one attempt it was caught
	// in (it may have lied on several of its micro-batches there).
	if v.Failed < 1 || len(v.Faulty) != 1 || v.Faulty[0].Stage != stage || v.Faulty[0].ChecksFailed != v.Failed {
		t.Errorf("summary: %d failed checks, faulty %+v; want the liar of stage %d with every failed check", v.Failed, v.Faulty, stage)
	}
	if sum.Swarm.Rollbacks != 0 || len(events(t, dir, "rolled_back")) != 0 {
		t.Errorf("rolled back: a swarm that evicts one of several replicas must redo, not roll back")
	}
	want, err := LoadState(filepath.Join(honestDir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	d := relDistance(t, want, got)
	t.Logf("final weights %.3g relative from the run without the liar; held-out loss %.6f vs %.6f", d, sum.FinalValLoss, honest.FinalValLoss)
	if d > 1e-5 {
		t.Errorf("final weights %.3g relative from the run without the liar, want within 1e-5: a lie got into the weights", d)
	}
	// Exactly: the run equals, bit for bit, one in which the liar left
	// cleanly before the step it was caught in (the same replicas sum
	// the same gradients from then on), so none of its lies reached the
	// weights.
	if at := mm[0].Step; at >= 2 {
		c.Faults.Events = []config.FaultEvent{{AtStep: at - 1, Kind: "leave", Stage: stage, Replica: c.Pipeline.Replicas - 1}}
		leftDir := t.TempDir()
		runTiny(t, c, leftDir)
		left, err := LoadState(filepath.Join(leftDir, StateFile))
		if err != nil {
			t.Fatal(err)
		}
		if d := relDistance(t, left, got); d != 0 {
			t.Errorf("final weights %.3g relative from the run in which the liar left before step %d, want 0", d, at)
		}
	}
	rep, err := ledger.Verify(filepath.Join(dir, ledger.File))
	if err != nil {
		t.Fatal(err)
	}
	var faults, failed int
	for _, s := range rep.Shares {
		faults += len(s.Faults)
		failed += s.ChecksFailed
	}
	if faults != 1 || failed != v.Failed {
		t.Errorf("ledger: %d faults and %d failed checks, want 1 and %d", faults, failed, v.Failed)
	}
}

// TestSpotChecksNoFalseAlarms: an honest 2 × 3 swarm with verify.fraction
// = 0.1 checks about a tenth of stage 0's outputs over 200 steps and
// finds no mismatch: the checks' recomputation is exact.
func TestSpotChecksNoFalseAlarms(t *testing.T) {
	if testing.Short() {
		t.Skip("200 steps")
	}
	c := trustConfig(t)
	c.Run.Steps = 200
	c.Train.EvalInterval = 200
	c.Verify.Fraction = 0.1
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	v := sum.Swarm.Verify
	t.Logf("checks %d of %d outputs, %d failed, %d bytes", v.Checks, 200*c.Train.MicroBatches, v.Failed, v.Bytes)
	if v.Checks < 60 || v.Failed != 0 || len(events(t, dir, "verify_mismatch")) != 0 {
		t.Errorf("%d checks, %d failed: want about 120 and none", v.Checks, v.Failed)
	}
}

// TestSpotChecksWithCodecs: with the subspace codec (the checks compare
// the coefficients and token ids that go on the wire) and int8, on 3
// stages × 2 replicas (the middle stage's checks recompute from the
// upstream sender's kept frame), an honest run has no mismatch and a
// liar at 1% is caught.
func TestSpotChecksWithCodecs(t *testing.T) {
	for _, m := range []compression.Method{compression.MethodSubspace, compression.MethodInt8} {
		t.Run(fmt.Sprintf("method=%v", m), func(t *testing.T) {
			c := trustConfig(t)
			c.Model.NLayer = 3
			c.Pipeline.Stages, c.Pipeline.Replicas = 3, 2
			c.Run.Steps = 30
			c.Train.EvalInterval = 30
			c.Compression.Method = m
			if m == compression.MethodSubspace {
				c.Compression.Rank = 8
			}
			c.Verify.Fraction = 0.5
			sum := runTiny(t, c, t.TempDir())
			if v := sum.Swarm.Verify; v.Checks < 100 || v.Failed != 0 || v.Bytes == 0 {
				t.Errorf("honest: %d checks, %d failed, %d bytes; want > 100, none, some", v.Checks, v.Failed, v.Bytes)
			}
			c.Faults.Events = []config.FaultEvent{{AtStep: 5, Kind: "lie", Stage: 1, Replica: 0, Fraction: 1, Scale: 0.01}}
			dir := t.TempDir()
			sum = runTiny(t, c, dir)
			v := sum.Swarm.Verify
			t.Logf("liar: checks %d, failed %d, check bytes %d, evicted %+v", v.Checks, v.Failed, v.Bytes, v.Faulty)
			if len(v.Faulty) != 1 || v.Faulty[0].Stage != 1 || len(events(t, dir, "peer_evicted")) != 1 {
				t.Errorf("faulty %+v: want stage 1's liar evicted", v.Faulty)
			}
		})
	}
}

// TestSpotChecksWithACodedSum: the replicas' gradient sum in PowerSGD
// rank 4 (each replica keeps its own error-feedback residual) still
// leaves every replica of a stage the same weights, so an honest 2 × 3
// run checked everywhere has no false alarm.
func TestSpotChecksWithACodedSum(t *testing.T) {
	c := trustConfig(t)
	c.Run.Steps = 30
	c.Train.EvalInterval = 30
	c.Compression.Replicas = compression.ReduceConfig{Method: compression.ReducePowerSGD, Rank: 4, ErrorFeedback: true}
	c.Verify.Fraction = 1
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	sum := runTiny(t, c, t.TempDir())
	if v := sum.Swarm.Verify; v.Checks != 30*c.Train.MicroBatches || v.Failed != 0 {
		t.Errorf("%d checks, %d failed; want %d and none", v.Checks, v.Failed, 30*c.Train.MicroBatches)
	}
}

// TestSpotChecksRefereeALyingChecker: a replica of stage 0 of a 2 × 3
// swarm sends honest outputs but lies in the checks it runs for the
// others (its recomputations ×1.01). Its first check of another
// replica disagrees with the receiver; the third replica referees, agrees
// with the receiver, and the lying checker is evicted, not the honest
// replica it accused.
func TestSpotChecksRefereeALyingChecker(t *testing.T) {
	c := trustConfig(t)
	c.Verify.Fraction = 1
	c.Faults.Events = []config.FaultEvent{{AtStep: 2, Kind: "lie", Stage: 0, Replica: 1, Scale: 0.01, Checks: true}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	v := sum.Swarm.Verify
	mm := events(t, dir, "verify_mismatch")
	if len(mm) != 1 || len(v.Faulty) != 1 {
		t.Fatalf("%d mismatches, faulty %+v: want one, the lying checker", len(mm), v.Faulty)
	}
	t.Logf("step %d: %v", mm[0].Step, mm[0].Detail)
	if v.Faulty[0].Peer != "stage-0-replica-1" || mm[0].Detail["peer"] != "stage-0-replica-1" || mm[0].Detail["referee"] == nil {
		t.Errorf("evicted %s (event names %v): want the lying checker stage-0-replica-1, found by a referee", v.Faulty[0].Peer, mm[0].Detail["peer"])
	}
}
