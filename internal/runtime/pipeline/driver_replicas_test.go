package pipeline

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/config"
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
	if _, err := d.State(ctx); err == nil || !strings.Contains(err.Error(), "stage 1: replica stage-1-replica-1 holds a different state") {
		t.Fatalf("a drifted replica: got %v, want the driver to name stage 1's replica 1", err)
	}
}

// TestReplicaLostIsDropped: a replica whose control link breaks mid-run
// is dropped by the membership machine; the step is redone by the
// survivors (no rollback: nothing was applied), and the run goes on with
// one replica fewer, every step's micro-batches routed to those left.
func TestReplicaLostIsDropped(t *testing.T) {
	c := tinyConfig(t)
	c.Pipeline.Stages = 2
	c.Pipeline.Replicas = 2
	d := testPipeline(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := d.Step(ctx, 0, 1e-3); err != nil {
		t.Fatal(err)
	}
	dead := d.reps.Worker(1, 1)
	d.ctrl[dead].Close()
	for step := 1; step < 4; step++ {
		res, err := d.Step(ctx, step, 1e-3)
		if err != nil {
			t.Fatalf("step %d after a replica's control link broke: %v", step, err)
		}
		var micros [2]int
		for _, s := range res.Stages {
			if s.Peer == d.holders[dead] {
				t.Fatalf("step %d: the lost replica %s still computed %d micro-batches", step, s.Peer, s.MicroBatches)
			}
			micros[s.Stage] += s.MicroBatches
		}
		if micros != [2]int{c.Train.MicroBatches, c.Train.MicroBatches} {
			t.Fatalf("step %d: micro-batches computed per stage %v, want all %d on each", step, micros, c.Train.MicroBatches)
		}
	}
	if got := d.m.Counts().ReplicasLost; got != 1 {
		t.Fatalf("replicas lost: %d, want 1", got)
	}
	if f := d.Faults(); f.StepsRedone > 1 {
		t.Fatalf("steps redone %d: only the interrupted one should be", f.StepsRedone)
	}
}

// TestJoinerMustMatchItsReplicas: a peer joins a 2 × 2 swarm in
// goroutines and is admitted; with its replay of the steps it missed off
// by 1e-4 of the learning rate, the driver's comparison of its state with
// a replica's stops the run at its admission instead.
func TestJoinerMustMatchItsReplicas(t *testing.T) {
	for _, broken := range []bool{false, true} {
		t.Run(fmt.Sprintf("broken=%v", broken), func(t *testing.T) {
			if broken {
				breakReplay = 1.0001
				defer func() { breakReplay = 1 }()
			}
			c := tinyConfig(t)
			c.Pipeline.Stages = 2
			c.Pipeline.Replicas = 2
			c.Run.Steps = 8
			c.Faults.Events = []config.FaultEvent{{AtStep: 2, Kind: "join"}}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			d := testPipeline(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var err error
			for step := 0; step < c.Run.Steps && err == nil; step++ {
				_, err = d.Step(ctx, step, 1e-3)
			}
			joined := d.swarmCounts().Joins
			switch {
			case !broken && (err != nil || joined != 1):
				t.Fatalf("joins %d, err %v: want the joiner admitted", joined, err)
			case broken && (err == nil || !strings.Contains(err.Error(), "that is not its replicas'")):
				t.Fatalf("a joiner whose replay is off: joins %d, err %v; want the admission refused", joined, err)
			}
		})
	}
}
