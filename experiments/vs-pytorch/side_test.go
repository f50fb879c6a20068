package main

import (
	"io"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/stages"
)

// The 2-stage pipeline this experiment times must train the same model as
// one process: same micro-batches, tied embedding gradients summed, so its
// loss tracks the whole model's step after step. Otherwise its speed
// figure would be for a different computation.
func TestPipelineMatchesWhole(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	text := make([]byte, 1<<16)
	for i := range text {
		text[i] = byte('a' + r.IntN(20))
	}
	o := options{batch: 8, micro: 4}
	cfg := stages.DefaultConfig()
	T, M, mb := cfg.BlockSize, o.micro, o.batch/o.micro

	whole, err := stages.NewStage(cfg, 0, cfg.NLayer, true, true, o.batch, 1)
	if err != nil {
		t.Fatal(err)
	}
	opt, _ := stages.NewAdamW(whole.Params(), stages.DefaultAdamWConfig())
	x, y := make([]int32, o.batch*T), make([]int32, o.batch*T)

	r01, w01 := io.Pipe()
	r10, w10 := io.Pipe()
	step0, _, err := newStageStep(o, text, false, r10, w01)
	if err != nil {
		t.Fatal(err)
	}
	step1, loss1, err := newStageStep(o, text, true, r01, w10)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		// The whole model sees the pipeline's micro-batches side by side.
		for m := 0; m < M; m++ {
			data.Batch(text, dataSeed, i, m, mb, T, x[m*mb*T:(m+1)*mb*T], y[m*mb*T:(m+1)*mb*T])
		}
		whole.ZeroGrad()
		want, err := whole.ForwardLoss(0, o.batch, T, x, nil, y)
		if err != nil {
			t.Fatal(err)
		}
		whole.Backward(0, nil, 1)
		opt.Step(lr)

		done := make(chan error, 1)
		go func() { done <- step0(i) }()
		if err := step1(i); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := loss1(); math.Abs(got-float64(want)) > 1e-5*float64(want) {
			t.Errorf("step %d: pipeline loss %.7f, whole model %.7f", i, got, want)
		}
	}
}
