package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestDriverFindsDriftedReplica: a replica whose state differs from its
// stage's first replica by one value is found at the next gathering of
// the state (a snapshot, a checkpoint, the end), and the run stops
// instead of averaging two different models; before that, the replicas
// passed the same check.
func TestDriverFindsDriftedReplica(t *testing.T) {
	c := tinyConfig(t)
	c.Pipeline.Stages = 2
	c.Pipeline.Replicas = 2
	c.Train.BatchSize, c.Train.MicroBatches = 4, 2
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d := testPipeline(t, c)
	ctx := context.Background()
	for step := 0; step < 2; step++ {
		if _, err := d.Step(ctx, step, 1e-3); err != nil {
			t.Fatal(err)
		}
	}
	st, err := d.State(ctx)
	if err != nil {
		t.Fatalf("replicas that trained alike: %v", err)
	}
	// Load the state, one weight nudged, into replica 1 of stage 1 only.
	ts := append(st.Tensors[:0:0], st.Tensors...)
	for i := range ts {
		if ts[i].Name == "lm_head.weight" || strings.HasPrefix(ts[i].Name, "transformer.h.1.") {
			data := append([]float32(nil), ts[i].Data...)
			data[0] += 1e-3
			ts[i].Data = data
			break
		}
	}
	k := d.reps.Worker(1, 1)
	if err := d.send(ctx, k, ctrlMsg{Kind: ctrlRestore, OptimStep: st.OptimStep, blob: encodeTensors(ts)}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.collectFrom(ctx, ctrlOK, []int{k}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.State(ctx); err == nil || !strings.Contains(err.Error(), "stage 1: replica 1 holds a different state") {
		t.Fatalf("a drifted replica: got %v, want the driver to name stage 1's replica 1", err)
	}
}

// TestReplicaFailureEndsTheRun: a replica whose control link breaks ends
// the step with errReplicaFailure (naming what happened), not a hang nor a
// recovery the driver cannot carry out for replicas yet.
func TestReplicaFailureEndsTheRun(t *testing.T) {
	c := tinyConfig(t)
	c.Pipeline.Stages = 2
	c.Pipeline.Replicas = 2
	d := testPipeline(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d.Step(ctx, 0, 1e-3); err != nil {
		t.Fatal(err)
	}
	d.ctrl[d.reps.Worker(1, 1)].Close()
	_, err := d.Step(ctx, 1, 1e-3)
	if !errors.Is(err, errReplicaFailure) || ctx.Err() != nil {
		t.Fatalf("step after a replica's control link broke: %v (context %v), want errReplicaFailure", err, ctx.Err())
	}
}
