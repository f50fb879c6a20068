package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"testing"

	"github.com/narrowband/narrowband/compression"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// tinyConfig is a model small enough to train a few steps in a second, on
// real text: a package of the Go standard library.
func tinyConfig(t *testing.T) config.Config {
	t.Helper()
	c := config.Default()
	c.Run.Name = "tiny"
	c.Run.Steps = 6
	c.Data.Path = config.Paths{filepath.Join(data.GoRoot(), "src", "strings")}
	c.Data.ValFraction = 0.2
	c.Model = config.Model{NLayer: 2, NHead: 2, NEmbd: 32, BlockSize: 32, VocabSize: 256, Bias: true}
	c.Train.BatchSize = 4
	c.Train.MicroBatches = 2
	c.Train.WarmupSteps = 2
	c.Train.EvalInterval = 3
	c.Train.EvalBatches = 2
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// testPipeline is a driver of c's pipeline on goroutines, closed at the end of
// the test.
func testPipeline(t *testing.T, c config.Config) *Driver {
	t.Helper()
	corpus, err := data.Load(context.Background(), data.Options{Paths: c.Data.Path, ValFraction: c.Data.ValFraction, MinTokens: c.Model.BlockSize + 1})
	if err != nil {
		t.Fatal(err)
	}
	layout, err := engine.Layout(c)
	if err != nil {
		t.Fatal(err)
	}
	place, err := InProcess(c, layout)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(c, layout, corpus, place, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// trainSteps runs n steps at a fixed learning rate and returns the state.
func trainSteps(t *testing.T, d *Driver, n int) *stages.State {
	t.Helper()
	ctx := context.Background()
	for step := 0; step < n; step++ {
		lr := 1e-3
		if d.async != nil {
			lr = engine.StepLR(d.cfg, step) // the rate the driver sends ahead
		}
		if _, err := d.Step(ctx, step, lr); err != nil {
			t.Fatal(err)
		}
	}
	st, err := d.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// equalStates requires got's tensors to be bit-identical to want's.
func equalStates(t *testing.T, want, got *stages.State) {
	t.Helper()
	byName := map[string][]float32{}
	for _, ts := range got.Tensors {
		byName[ts.Name] = ts.Data
	}
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for _, w := range want.Tensors {
		g, ok := byName[w.Name]
		if !ok || len(g) != len(w.Data) {
			t.Fatalf("tensor %s missing or resized", w.Name)
		}
		for i := range g {
			if math.Float32bits(g[i]) != math.Float32bits(w.Data[i]) {
				t.Fatalf("tensor %s[%d] = %v, clean run %v", w.Name, i, g[i], w.Data[i])
			}
		}
	}
}

// TestTiedCopiesStayIdentical: the first stage's token embedding and the
// last stage's LM head are one tied matrix in two places; after training
// (fp32 links, and subspace links that exchange only its coefficients) the
// copies are bit-identical.
func TestTiedCopiesStayIdentical(t *testing.T) {
	for _, method := range []compression.Method{compression.MethodNone, compression.MethodSubspace} {
		t.Run("method="+method.String(), func(t *testing.T) {
			c := tinyConfig(t)
			c.Model.NLayer = 3
			c.Pipeline.Stages = 3
			c.Compression.Method = method
			if method == compression.MethodSubspace {
				c.Compression.Rank = 8
				c.Compression.Precision = compression.FP16
			}
			p := testPipeline(t, c)
			for step := 0; step < 5; step++ {
				if _, err := p.Step(context.Background(), step, 1e-3); err != nil {
					t.Fatal(err)
				}
			}
			for i := range p.ctrl {
				if err := p.send(context.Background(), i, ctrlMsg{Kind: ctrlState}); err != nil {
					t.Fatal(err)
				}
			}
			res, err := p.collect(context.Background(), ctrlStateIs)
			if err != nil {
				t.Fatal(err)
			}
			find := func(blob []byte, name string) []float32 {
				ts, err := decodeTensors(blob)
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range ts {
					if x.Name == name {
						return x.Data
					}
				}
				t.Fatalf("no %s", name)
				return nil
			}
			wte := find(res[0].blob, "transformer.wte.weight")
			head := find(res[len(res)-1].blob, "lm_head.weight")
			for i := range wte {
				if math.Float32bits(wte[i]) != math.Float32bits(head[i]) {
					t.Fatalf("element %d: embedding %v, LM head %v", i, wte[i], head[i])
				}
			}
		})
	}
}

// TestDuplicateFramesAreIgnored: every activation and gradient arrives
// twice on both directions of a link; the copies are dropped and training
// is exactly that of clean links.
func TestDuplicateFramesAreIgnored(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("async=%v", async), func(t *testing.T) {
			c := tinyConfig(t)
			c.Pipeline.Stages = 2
			c.Train.EvalInterval = 0
			if async {
				// A duplicate under async is a frame the machine already
				// took (or its stage already used): dropped, not a bad
				// frame that rolls every stage back.
				c.Pipeline.Schedule, c.Pipeline.InFlight = scheduler.Async, 1
			}
			clean := trainSteps(t, testPipeline(t, c), c.Run.Steps)
			ctx := context.Background()
			p := testPipeline(t, c)
			eng := p
			for stage, peer := range map[int]int{0: 1, 1: 0} {
				if err := p.send(ctx, stage, ctrlMsg{Kind: ctrlFault, Peer: peer, Fault: "duplicate", Duration: 600}); err != nil {
					t.Fatal(err)
				}
				if _, err := p.collectFrom(ctx, ctrlOK, []int{stage}); err != nil {
					t.Fatal(err)
				}
			}
			got := trainSteps(t, eng, c.Run.Steps)
			equalStates(t, clean, got)
			if f := p.Faults(); f.RejectedFrames != 0 || f.StepsRedone != 0 {
				t.Errorf("duplicates caused %d rejections and %d redone steps; they should simply be dropped", f.RejectedFrames, f.StepsRedone)
			}
		})
	}
}
