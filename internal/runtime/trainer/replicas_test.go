package trainer

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/scheduler"
)

// TestReplicasEqualOneChain: S stages × R replicas train the same model as
// S stages × 1 with the same global batch and seed — each replica computes
// its share of the micro-batches (2, 1, 1 of 4 with R = 3) and the
// replicas of a stage sum their gradients —
// so the losses agree within 1e-5 relative over 20 steps (the additions
// run in another order, nothing else differs) and so do the final weights;
// the run's driver checked at the end that the replicas of every stage
// hold the same bits, and the step records count the sum's bytes.
func TestReplicasEqualOneChain(t *testing.T) {
	c := tinyConfig(t)
	c.Run.Steps = 20
	c.Model.NLayer = 2
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Train.EvalInterval = 10
	for _, tc := range []struct {
		S, R  int
		sched scheduler.Schedule
	}{{2, 2, scheduler.OneFOneB}, {2, 2, scheduler.GPipe}, {2, 3, scheduler.OneFOneB}, {1, 2, scheduler.OneFOneB}} {
		t.Run(fmt.Sprintf("stages=%d/replicas=%d/schedule=%v", tc.S, tc.R, tc.sched), func(t *testing.T) {
			one := c
			one.Pipeline.Stages, one.Pipeline.Schedule = tc.S, tc.sched
			refLoss, ref := stateOf(t, one)
			two := one
			two.Pipeline.Replicas = tc.R
			if err := two.Validate(); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			sum := runTiny(t, two, dir)
			got, err := LoadState(filepath.Join(dir, StateFile))
			if err != nil {
				t.Fatal(err)
			}
			sameLosses(t, fmt.Sprintf("%d replicas", tc.R), losses(t, dir), "1 replica", refLoss)
			compareStates(t, ref, got, 1e-5)
			// Each of a stage's R-1 chain links carries its gradient once
			// each way: 2 × 4 bytes a parameter, plus frame headers (under
			// 1%); the last stage's copy of the tied embedding is a
			// parameter of its own there (the state holds it once).
			recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			var params int64
			for _, ts := range got.Tensors {
				if len(ts.Name) < 6 || ts.Name[:6] != "optim." {
					params += int64(len(ts.Data))
				}
			}
			if tc.S > 1 {
				params += int64(c.Model.VocabSize * c.Model.NEmbd)
			}
			want := int64(8*(tc.R-1)) * params
			for _, r := range recs {
				if r.ReplicaBytes < want || r.ReplicaBytes > want+want/100 {
					t.Fatalf("step %d: %d bytes of replica sums, want about %d links × 2 × 4 × %d parameters", r.Step, r.ReplicaBytes, tc.R-1, params)
				}
			}
			if sum.ReplicaBytesPerStep != float64(recs[0].ReplicaBytes) {
				t.Errorf("summary: %v replica bytes a step, step records %d", sum.ReplicaBytesPerStep, recs[0].ReplicaBytes)
			}
		})
	}
}

// TestReplicasOverProcesses: 2 stages × 2 replicas in four processes of
// their own (loopback TCP, one thread each) train as 2 stages × 1 in
// goroutines do: the process boundary and the sockets change nothing.
func TestReplicasOverProcesses(t *testing.T) {
	c := tinyConfig(t)
	c.Run.Steps = 20
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Train.EvalInterval = 10
	c.Pipeline.Stages = 2
	refLoss, ref := stateOf(t, c)
	c.Pipeline.Replicas = 2
	c.Pipeline.Processes = true
	c.Train.Threads = 1
	dir := t.TempDir()
	runTiny(t, c, dir)
	got, err := LoadState(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	sameLosses(t, "2 replicas in processes", losses(t, dir), "1 replica in goroutines", refLoss)
	compareStates(t, ref, got, 1e-5)
	// Every replica reported its own process's memory: four processes.
	recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	peers := map[string]bool{}
	for _, s := range recs[len(recs)-1].Stages {
		if s.PeakRSS <= 0 {
			t.Errorf("stage %d (%s) reported no process memory: not a process of its own", s.Stage, s.Peer)
		}
		peers[s.Peer] = true
	}
	if len(peers) != 4 {
		t.Errorf("the last step names %d holders (%v), want 4", len(peers), peers)
	}
}

// TestReplicasOverWebRTC: 2 stages × 2 replicas on four WebRTC peer
// processes (lanes and each stage's chain of replicas on data channels)
// train as 2 stages × 1 in goroutines do. The run snapshots as WebRTC runs
// do, so the driver compared the replicas' state digests along the way.
func TestReplicasOverWebRTC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four WebRTC peer processes")
	}
	c := tinyConfig(t)
	c.Run.Steps = 20
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Train.EvalInterval = 10
	c.Pipeline.Stages = 2
	refLoss, ref := stateOf(t, c)
	c.Pipeline.Replicas = 2
	c.Pipeline.Transport = "webrtc"
	c.Train.Threads = 1
	dir := t.TempDir()
	runTiny(t, c, dir)
	got, err := LoadState(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	sameLosses(t, "2 replicas over WebRTC", losses(t, dir), "1 replica in goroutines", refLoss)
	compareStates(t, ref, got, 1e-5)
	recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if last := recs[len(recs)-1]; len(last.Stages) != 4 || last.ReplicaBytes == 0 {
		t.Errorf("last step: %d stage records and %d replica-sum bytes, want 4 and some", len(last.Stages), last.ReplicaBytes)
	}
}

// TestReplicasResume: a run with replicas resumes from its checkpoint
// exactly — every replica of a stage loads the one copy the checkpoint
// holds, and goes on bit for bit as the uninterrupted run.
func TestReplicasResume(t *testing.T) {
	c := tinyConfig(t)
	c.Pipeline.Stages = 2
	c.Pipeline.Replicas = 2
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
	lw, lr := losses(t, whole), losses(t, broken)
	if len(lw) != len(lr) {
		t.Fatalf("resumed run logged %d losses, uninterrupted %d", len(lr), len(lw))
	}
	for i := range lw {
		if math.Float64bits(lw[i]) != math.Float64bits(lr[i]) {
			t.Fatalf("value %d: resumed %v, uninterrupted %v", i, lr[i], lw[i])
		}
	}
}

// TestReplicasWithStatelessCodecs: with a codec that codes each message on
// its own (the subspace codec and its constraint on the model; int8), a
// micro-batch is coded the same whichever lane carries it, so 2 × 2 still
// trains as 2 × 1 with the same codec.
func TestReplicasWithStatelessCodecs(t *testing.T) {
	for _, m := range []compression.Method{compression.MethodSubspace, compression.MethodInt8} {
		t.Run(fmt.Sprintf("method=%v", m), func(t *testing.T) {
			c := tinyConfig(t)
			c.Run.Steps = 10
			c.Train.BatchSize = 8
			c.Train.MicroBatches = 4
			c.Pipeline.Stages = 2
			c.Compression.Method = m
			if m == compression.MethodSubspace {
				c.Compression.Rank = 8
			}
			refLoss, ref := stateOf(t, c)
			c.Pipeline.Replicas = 2
			gotLoss, got := stateOf(t, c)
			sameLosses(t, "2 replicas", gotLoss, "1 replica", refLoss)
			compareStates(t, ref, got, 1e-5)
		})
	}
}
