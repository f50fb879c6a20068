package trainer

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/stages"
)

// tinyConfig is a model small enough to train a few steps in a second, on
// real text: a package of the Go standard library.
func tinyConfig(t testing.TB) config.Config {
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

func runTiny(t *testing.T, c config.Config, out string) *metrics.Summary {
	t.Helper()
	o := Options{Config: c, Out: out}
	if os.Getenv("NARROWBAND_TEST_LOG") != "" { // debugging a test run
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	sum, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func losses(t *testing.T, dir string) []float64 {
	t.Helper()
	out, err := metrics.Losses(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSameSeedSameLossCurve(t *testing.T) {
	c := tinyConfig(t)
	a, b := t.TempDir(), t.TempDir()
	runTiny(t, c, a)
	runTiny(t, c, b)
	la, lb := losses(t, a), losses(t, b)
	if len(la) != 6+2 {
		t.Fatalf("got %d loss values, want 6 train + 2 held-out", len(la))
	}
	for i := range la {
		if math.Float64bits(la[i]) != math.Float64bits(lb[i]) {
			t.Fatalf("value %d differs between two runs with one seed: %v vs %v", i, la[i], lb[i])
		}
	}
	if la[len(la)-2] >= la[0] {
		t.Errorf("training did not lower the loss: first %v, last %v", la[0], la[len(la)-2])
	}
	c.Run.Seed++
	d := t.TempDir()
	runTiny(t, c, d)
	if losses(t, d)[0] == la[0] {
		t.Error("another seed gave the same first loss")
	}
}

// stopAfter cancels the run once step n has been published.
type stopAfter struct {
	n      int
	cancel context.CancelFunc
}

func (s *stopAfter) PublishStep(r metrics.StepRecord) {
	if r.Step >= s.n {
		s.cancel()
	}
}
func (s *stopAfter) PublishSpans([]metrics.Span) {}
func (s *stopAfter) PublishEvent(metrics.Event)  {}

func TestResumeIsBitIdentical(t *testing.T) {
	c := tinyConfig(t)
	whole := t.TempDir()
	runTiny(t, c, whole)

	c.Train.CheckpointInterval = 3
	broken := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Run(ctx, Options{Config: c, Out: broken, Observer: &stopAfter{n: 4, cancel: cancel}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: got %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(broken, "summary.json")); err == nil {
		t.Fatal("an interrupted run wrote summary.json")
	}
	if _, err := Run(context.Background(), Options{Config: c, Out: broken, Resume: broken}); err != nil {
		t.Fatal(err)
	}
	lw, lr := losses(t, whole), losses(t, broken)
	if len(lw) != len(lr) {
		t.Fatalf("resumed run has %d loss values, uninterrupted %d", len(lr), len(lw))
	}
	for i := range lw {
		if math.Float64bits(lw[i]) != math.Float64bits(lr[i]) {
			t.Fatalf("value %d: resumed %v, uninterrupted %v", i, lr[i], lw[i])
		}
	}
}

func TestResumeRefusesOtherModel(t *testing.T) {
	c := tinyConfig(t)
	dir := t.TempDir()
	runTiny(t, c, dir)
	c.Model.NEmbd = 64
	_, err := Run(context.Background(), Options{Config: c, Out: t.TempDir(), Resume: dir})
	if err == nil {
		t.Fatal("resumed a checkpoint into a model of another width")
	}
}

func TestEvalOfCheckpointMatchesTrainer(t *testing.T) {
	c := tinyConfig(t)
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	corpus, err := data.Load(context.Background(), data.Options{Paths: c.Data.Path, ValFraction: c.Data.ValFraction, MinTokens: c.Model.BlockSize + 1})
	if err != nil {
		t.Fatal(err)
	}
	// The trainer's held-out windows, laid end to end: Chunks cuts them
	// back into exactly the same windows.
	var text []int32
	for _, w := range data.EvalWindows(corpus.Val, uint64(c.Run.Seed), c.Train.EvalBatches*c.Train.BatchSize, c.Model.BlockSize) {
		text = append(text, w...)
	}
	st, err := stages.LoadModel(filepath.Join(dir, CheckpointFile), 3)
	if err != nil {
		t.Fatal(err)
	}
	got, err := stages.EvalLoss(context.Background(), st, 0, 3, data.Chunks(text, c.Model.BlockSize))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-sum.FinalValLoss) > 1e-5*sum.FinalValLoss {
		t.Fatalf("checkpoint evaluates to %v on the held-out windows; the trainer reported %v", got, sum.FinalValLoss)
	}
}

// TestBadConfigFailsBeforeData: a config the codec cannot build is refused
// before the corpus is read (here the corpus does not even exist), naming
// the key.
func TestBadConfigFailsBeforeData(t *testing.T) {
	c := tinyConfig(t)
	c.Data.Path = config.Paths{filepath.Join(t.TempDir(), "no such corpus")}
	c.Compression.Method = compression.MethodLowRank
	c.Compression.Rank = 8
	c.Compression.Precision = compression.Int8
	_, err := Run(context.Background(), Options{Config: c, Out: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "compression.precision") || strings.Contains(err.Error(), "no such corpus") {
		t.Fatalf("err = %v, want the compression.precision refusal before any data is read", err)
	}
}
