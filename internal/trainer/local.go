package trainer

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/stages"
)

// modelConfig maps the run config's [model] onto the engine's.
func modelConfig(c config.Config) stages.Config {
	m := c.Model
	return stages.Config{NLayer: m.NLayer, NHead: m.NHead, NEmbd: m.NEmbd, BlockSize: m.BlockSize, VocabSize: m.VocabSize, Bias: m.Bias}
}

func adamConfig(c config.Config) stages.AdamWConfig {
	t := c.Train
	return stages.AdamWConfig{Beta1: float32(t.Beta1), Beta2: float32(t.Beta2), Eps: float32(t.Eps), WeightDecay: float32(t.WeightDecay)}
}

// newEngine picks the engine the config asks for.
func newEngine(ctx context.Context, cfg config.Config, corpus *data.Corpus, log *slog.Logger, out string) (engine, error) {
	if cfg.Pipeline.Stages == 1 && cfg.Pipeline.Transport == "inproc" && !cfg.Pipeline.Processes {
		return newLocal(cfg, corpus)
	}
	return newPipeline(ctx, cfg, corpus, log, out)
}

// local trains the whole model in this process: one Stage that is both
// first and last, micro-batches accumulated in place.
type local struct {
	cfg    config.Config
	corpus *data.Corpus
	st     *stages.Stage
	opt    *stages.AdamW
	x, y   []int32
	B, T   int
	t0     time.Time // run start, for timeline spans
}

func newLocal(cfg config.Config, corpus *data.Corpus) (*local, error) {
	M := cfg.Train.MicroBatches
	B := cfg.Train.BatchSize / M
	st, err := stages.NewStage(modelConfig(cfg), 0, cfg.Model.NLayer, true, true, B, 1)
	if err != nil {
		return nil, err
	}
	st.Init(cfg.Run.Seed)
	opt, err := stages.NewAdamW(st.Params(), adamConfig(cfg))
	if err != nil {
		return nil, err
	}
	T := cfg.Model.BlockSize
	return &local{cfg: cfg, corpus: corpus, st: st, opt: opt, x: make([]int32, B*T), y: make([]int32, B*T), B: B, T: T, t0: time.Now()}, nil
}

func (l *local) Params() int64 { return l.st.Config().NumParams() }
func (l *local) Close() error  { return nil }

func (l *local) Step(ctx context.Context, step int, lr float64) (stepResult, error) {
	M := l.cfg.Train.MicroBatches
	l.st.ZeroGrad()
	var loss float64
	var res stepResult
	t0 := time.Now()
	span := func(kind string, micro int, t time.Time) {
		res.Spans = append(res.Spans, metrics.Span{Kind: kind, Step: step + 1, Micro: micro, Start: t.Sub(l.t0).Seconds(), End: time.Since(l.t0).Seconds()})
	}
	for m := 0; m < M; m++ {
		t := time.Now()
		data.Batch(l.corpus.Train, l.cfg.Run.Seed, step, m, l.B, l.T, l.x, l.y)
		v, err := l.st.ForwardLoss(0, l.B, l.T, l.x, nil, l.y)
		if err != nil {
			return stepResult{}, err
		}
		loss += float64(v)
		span("forward", m, t)
		t = time.Now()
		if _, err := l.st.Backward(0, nil, 1/float32(M)); err != nil {
			return stepResult{}, err
		}
		span("backward", m, t)
	}
	t := time.Now()
	ss := l.st.GradSumSquares()
	stages.ScaleGrads(l.st.Params(), stages.ClipScale(ss, l.cfg.Train.GradClip))
	l.opt.Step(float32(lr))
	span("optimizer", -1, t)
	busy := time.Since(t0).Seconds()
	res.Loss, res.GradNorm, res.Busy = loss/float64(M), math.Sqrt(ss), busy
	res.Stages = []metrics.StageStats{{Stage: 0, BusySeconds: busy}}
	return res, nil
}

func (l *local) State(ctx context.Context) (*State, error) {
	st := &State{Model: l.st.Config()}
	st.addStage(l.st, l.opt)
	return st, nil
}

func (l *local) Restore(ctx context.Context, st *State) error {
	return st.restoreStage(l.st, l.opt)
}

func (l *local) Eval(ctx context.Context, windows [][]byte) (float64, error) {
	return evalWindows(ctx, l.st, 0, l.B, windows)
}

// evalWindows returns the mean loss per predicted byte of a whole-model
// stage over windows (each predicts its last len-1 bytes), in batches of up
// to maxB windows of equal length, using activation slot slot.
func evalWindows(ctx context.Context, st *stages.Stage, slot, maxB int, windows [][]byte) (float64, error) {
	var sum float64
	var n int64
	var x, y []int32
	for i := 0; i < len(windows); {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		T := len(windows[i]) - 1
		j := i
		for j < len(windows) && j-i < maxB && len(windows[j])-1 == T {
			j++
		}
		B := j - i
		x, y = x[:0], y[:0]
		for _, w := range windows[i:j] {
			for t := 0; t < T; t++ {
				x = append(x, int32(w[t]))
				y = append(y, int32(w[t+1]))
			}
		}
		v, err := st.ForwardLoss(slot, B, T, x, nil, y)
		if err != nil {
			return 0, fmt.Errorf("evaluate: %w", err)
		}
		sum += float64(v) * float64(B*T)
		n += int64(B * T)
		i = j
	}
	if n == 0 {
		return 0, fmt.Errorf("evaluate: no bytes to predict")
	}
	return sum / float64(n), nil
}
