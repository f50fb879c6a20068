package engine

import (
	"context"
	"math"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/stages"
)

// Local trains the whole model in this process: one Stage that is both
// first and last, micro-batches accumulated in place.
type Local struct {
	cfg    config.Config
	corpus *data.Corpus
	st     *stages.Stage
	opt    *stages.AdamW
	x, y   []int32
	B, T   int
	t0     time.Time // run start, for timeline spans
}

// NewLocal builds the one-process engine for cfg, initialized from the
// run's seed.
func NewLocal(cfg config.Config, corpus *data.Corpus) (*Local, error) {
	M := cfg.Train.MicroBatches
	B := cfg.Train.BatchSize / M
	st, err := stages.NewStage(ModelConfig(cfg), 0, cfg.Model.NLayer, true, true, B, 1)
	if err != nil {
		return nil, err
	}
	st.Init(uint64(cfg.Run.Seed))
	opt, err := stages.NewAdamW(st.Params(), AdamConfig(cfg))
	if err != nil {
		return nil, err
	}
	T := cfg.Model.BlockSize
	return &Local{cfg: cfg, corpus: corpus, st: st, opt: opt, x: make([]int32, B*T), y: make([]int32, B*T), B: B, T: T, t0: time.Now()}, nil
}

func (l *Local) Params() int64 { return l.st.Config().NumParams() }
func (l *Local) Close() error  { return nil }

// SetHooks reports the one stage, held by this process.
func (l *Local) SetHooks(h Hooks) {
	if h.Peers != nil {
		h.Peers([]metrics.Peer{{ID: "stage-0", Stage: 0, Address: "in-process", Candidate: "inproc", State: metrics.PeerActive}})
	}
}

func (l *Local) Step(ctx context.Context, step int, lr float64) (StepResult, error) {
	M := l.cfg.Train.MicroBatches
	l.st.ZeroGrad()
	var loss float64
	var res StepResult
	t0 := time.Now()
	span := func(kind string, micro int, t time.Time) {
		res.Spans = append(res.Spans, metrics.Span{Kind: kind, Step: step + 1, Micro: micro, Start: t.Sub(l.t0).Seconds(), End: time.Since(l.t0).Seconds()})
	}
	for m := 0; m < M; m++ {
		t := time.Now()
		data.Batch(l.corpus.Train, uint64(l.cfg.Run.Seed), step, m, l.B, l.T, l.x, l.y)
		v, err := l.st.ForwardLoss(0, l.B, l.T, l.x, nil, l.y)
		if err != nil {
			return StepResult{}, err
		}
		loss += float64(v)
		span("forward", m, t)
		t = time.Now()
		if _, err := l.st.Backward(0, nil, 1/float32(M)); err != nil {
			return StepResult{}, err
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

func (l *Local) State(ctx context.Context) (*stages.State, error) {
	st := &stages.State{Model: l.st.Config()}
	st.AddStage(l.st, l.opt, l.cfg.Model.Tied()) // an untied head is a weight of its own
	return st, nil
}

func (l *Local) Restore(ctx context.Context, st *stages.State) error {
	return st.RestoreStage(l.st, l.opt)
}

func (l *Local) Eval(ctx context.Context, windows [][]int32) (float64, error) {
	return stages.EvalLoss(ctx, l.st, 0, l.B, windows)
}
