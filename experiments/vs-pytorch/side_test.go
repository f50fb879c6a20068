package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/runtime/launch"
	"github.com/narrowband/narrowband/stages"
)

// TestMain lets this test binary serve as the stage worker processes that
// startPipeline starts (it runs os.Executable, this binary, as a worker).
func TestMain(m *testing.M) {
	if os.Getenv(launch.WorkerEnv) == "1" {
		if err := runWorker(); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The pipeline this experiment times — the same config builder, worker
// processes pinned by the same code — must train the same model as the
// whole-model engine on the same micro-batches: its loss tracks
// engine.Local's step after step. Otherwise its speed figure would be for
// a different computation. A small model keeps it to seconds.
func TestPipelineMatchesWhole(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	text := make([]byte, 1<<16)
	for i := range text {
		text[i] = byte('a' + r.IntN(20))
	}
	corpus := newCorpus("random letters", text)
	model := stages.Config{NLayer: 2, NHead: 2, NEmbd: 32, BlockSize: 32, VocabSize: 256, Bias: true}
	const batch, micro, steps = 8, 4, 3

	// The whole model accumulates the pipeline's micro-batches.
	wholeCfg, err := newConfig(model, batch, micro, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := engine.NewLocal(wholeCfg, corpus)
	if err != nil {
		t.Fatal(err)
	}
	pipeCfg, err := newConfig(model, batch, micro, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := startPipeline(context.Background(), pipeCfg, corpus, log)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Each worker runs on its stage's core alone (p.cores is in pid order).
	asked, err := stageCores(2)
	if err != nil {
		t.Fatal(err)
	}
	want, got := strings.Split(asked, ","), slices.Clone(p.cores)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("workers may run on CPUs %q, want one each of %q", p.cores, asked)
	}

	ctx := context.Background()
	for i := 0; i < steps; i++ {
		w, err := whole.Step(ctx, i, lr)
		if err != nil {
			t.Fatal(err)
		}
		g, err := p.Step(ctx, i, lr)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("step %d: whole model %.7f, pipeline %.7f", i, w.Loss, g.Loss)
		if math.Abs(g.Loss-w.Loss) > 1e-5*w.Loss {
			t.Errorf("step %d: pipeline loss %.7f, whole model %.7f", i, g.Loss, w.Loss)
		}
	}
	if cpu, rss, err := p.workerUsage(); err != nil || cpu <= 0 || rss <= 0 {
		t.Errorf("workers' usage: %.2f CPU-s, %d bytes peak RSS, err %v; want both positive", cpu, rss, err)
	}
}
