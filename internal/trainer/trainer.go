package trainer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/web"
)

// Observer is told about the run as it happens (the web view). Calls must
// not block: training never waits for an observer.
type Observer interface {
	PublishStep(metrics.StepRecord)
	PublishSpans([]metrics.Span)
	PublishEvent(metrics.Event)
}

// Options are what a run needs besides its config.
type Options struct {
	Config config.Config
	// Out is the run's folder; created if missing.
	Out string
	// Resume, if set, is a run folder whose train_state.safetensors the run
	// continues from. It may equal Out.
	Resume string
	Log    *slog.Logger
	// Progress, if set, gets a live progress line (a terminal).
	Progress io.Writer
	Observer Observer
	// Corpus, if set, is used instead of loading Config.Data (tests share one).
	Corpus *data.Corpus
	// Web, if set, is the live view: it gets the run's description, its
	// peers and status, and every record.
	Web *web.Server
}

// stepResult is what one optimizer step reports.
type stepResult struct {
	Loss     float64
	GradNorm float64
	Stages   []metrics.StageStats
	Links    []metrics.LinkStats
	Spans    []metrics.Span
	Events   []metrics.Event
	// Wire bytes crossing stage boundaries in this step, summed over
	// boundaries, and the fp32 bytes they stand for.
	WireForward, WireBackward int64
	RawForward, RawBackward   int64
	NetWait, Busy, Idle       float64 // seconds summed over stages
}

// engine is one way of computing a training step: one process, or a
// pipeline of stages.
type engine interface {
	Step(ctx context.Context, step int, lr float64) (stepResult, error)
	Eval(ctx context.Context, windows [][]byte) (float64, error)
	// State gathers the whole model and its optimizer state.
	State(ctx context.Context) (*State, error)
	// Restore loads a State saved by any engine with the same model config.
	Restore(ctx context.Context, st *State) error
	Params() int64
	Close() error
}

// Run trains according to o and returns the summary it also writes.
func Run(ctx context.Context, o Options) (_ *metrics.Summary, err error) {
	cfg := o.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output folder: %w", err)
	}
	corpus := o.Corpus
	T := cfg.Model.BlockSize
	if corpus == nil {
		var err error
		corpus, err = data.Load(data.Options{Path: cfg.Data.Path, ValFraction: cfg.Data.ValFraction, Extensions: cfg.Data.Extensions, MinBytes: T + 1})
		if err != nil {
			return nil, err
		}
		log.Info("corpus loaded", "source", corpus.Source, "train_bytes", len(corpus.Train), "val_bytes", len(corpus.Val), "train_files", corpus.TrainFiles, "val_files", corpus.ValFiles)
	}
	resolved, err := cfg.TOML()
	if err != nil {
		return nil, err
	}
	if err := metrics.WriteFileAtomic(filepath.Join(o.Out, "config.toml"), resolved); err != nil {
		return nil, err
	}

	if o.Web != nil {
		o.Web.SetRun(web.RunInfo{Name: cfg.Run.Name, Seed: int64(cfg.Run.Seed), Config: string(resolved), TotalSteps: cfg.Run.Steps, Start: time.Now()})
		o.Web.SetStatus("starting " + strconv.Itoa(cfg.Pipeline.Stages) + " stage(s)")
		var obs multiObserver
		if o.Observer != nil {
			obs = append(obs, o.Observer)
		}
		o.Observer = append(obs, o.Web)
	}
	eng, err := newEngine(ctx, cfg, corpus, log, o.Out)
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	if o.Web != nil {
		o.Web.SetPeers(enginePeers(cfg))
		o.Web.SetStatus("training")
		defer func() {
			if err != nil {
				o.Web.SetStatus("stopped: " + err.Error())
			} else {
				o.Web.SetStatus("finished")
			}
		}()
	}

	start := 0
	var jsonl *metrics.JSONL
	var wallBefore float64
	if o.Resume != "" {
		st, err := LoadState(filepath.Join(o.Resume, StateFile))
		if err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		if st.Model != modelConfig(cfg) {
			return nil, fmt.Errorf("resume: %s holds a model %+v but the config asks for %+v; resume with the run's own config.toml", o.Resume, st.Model, modelConfig(cfg))
		}
		if err := eng.Restore(ctx, st); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		start = st.Step
		wallBefore = st.WallSeconds
		if filepath.Clean(o.Resume) != filepath.Clean(o.Out) {
			if b, err := os.ReadFile(filepath.Join(o.Resume, "metrics.jsonl")); err == nil {
				if err := metrics.WriteFileAtomic(filepath.Join(o.Out, "metrics.jsonl"), b); err != nil {
					return nil, err
				}
			}
		}
		jsonl, err = metrics.ResumeJSONL(filepath.Join(o.Out, "metrics.jsonl"), start)
		if err != nil {
			return nil, err
		}
		log.Info("resumed", "from", o.Resume, "step", start)
	} else {
		jsonl, err = metrics.CreateJSONL(filepath.Join(o.Out, "metrics.jsonl"))
		if err != nil {
			return nil, err
		}
	}
	defer jsonl.Close()

	evalWin := data.EvalWindows(corpus.Val, cfg.Run.Seed, cfg.Train.EvalBatches*cfg.Train.BatchSize, T)
	tokensPerStep := int64(cfg.Train.BatchSize * T)
	sum := &metrics.Summary{
		Name: cfg.Run.Name, Seed: cfg.Run.Seed, Steps: cfg.Run.Steps, Params: eng.Params(),
		Stages: cfg.Pipeline.Stages, Schedule: cfg.Pipeline.Schedule, Transport: cfg.Pipeline.Transport,
		Compression: cfg.Compression.Method, ResumedFromStep: start,
	}
	prog := newProgress(o.Progress, cfg.Run.Steps)
	t0 := time.Now()
	var lastLoss, valLoss float64 = math.NaN(), math.NaN()
	var tot stepResult
	measured := 0
	// The timeline of the last few steps goes to timeline.jsonl for the
	// Gantt chart; the web view gets every step's live.
	const timelineSteps = 5
	var recent [][]metrics.Span
	// events logs, records and publishes what happened besides training.
	events := func(evs []metrics.Event) error {
		for _, ev := range evs {
			log.Info("event", "kind", ev.Kind, "step", ev.Step, "detail", ev.Detail)
			if err := jsonl.Write(ev); err != nil {
				return err
			}
			if o.Observer != nil {
				o.Observer.PublishEvent(ev)
			}
		}
		return nil
	}
	// rolledBack reports whether err is the pipeline going back to an
	// earlier step (a stage changed hands) and moves the loop there; the
	// redone steps' records follow the rollback event.
	rolledBack := func(err error, step *int) bool {
		var rb *rollbackError
		if !errors.As(err, &rb) {
			return false
		}
		*step = rb.to - 1
		return true
	}
	if h, ok := eng.(interface {
		setHooks(func(string), func(metrics.Event), func([]web.Peer))
	}); ok {
		status, peers := func(string) {}, func([]web.Peer) {}
		if o.Web != nil {
			status, peers = o.Web.SetStatus, o.Web.SetPeers
		}
		h.setHooks(status, func(ev metrics.Event) {
			if err := events([]metrics.Event{ev}); err != nil {
				log.Error("write event", "err", err)
			}
		}, peers)
	}
	for step := start; step < cfg.Run.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("stopped at step %d: %w", step, err)
		}
		lr := learningRate(step, cfg.Train.WarmupSteps, cfg.Run.Steps, cfg.Train.LearningRate, cfg.Train.MinLR)
		ts := time.Now()
		res, err := eng.Step(ctx, step, lr)
		if rolledBack(err, &step) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("step %d: %w", step+1, err)
		}
		if math.IsNaN(res.Loss) || math.IsInf(res.Loss, 0) {
			return nil, fmt.Errorf("step %d: the loss is %v; lower train.learning_rate or raise train.warmup_steps", step+1, res.Loss)
		}
		dt := time.Since(ts).Seconds()
		lastLoss = res.Loss
		done := step + 1
		wall := wallBefore + time.Since(t0).Seconds()
		rec := metrics.StepRecord{
			Step: done, Tokens: int64(done) * tokensPerStep, Loss: res.Loss, LR: lr,
			TokensPerSecond: float64(tokensPerStep) / dt, WallSeconds: wall, GradNorm: res.GradNorm,
			Stages: res.Stages, Links: res.Links,
		}
		if step > start { // the first step warms caches and connections
			accumulate(&tot, res)
			measured++
		}
		evalNow := done == cfg.Run.Steps || (cfg.Train.EvalInterval > 0 && done%cfg.Train.EvalInterval == 0)
		if evalNow {
			v, err := eng.Eval(ctx, evalWin)
			if rolledBack(err, &step) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("step %d: evaluation: %w", done, err)
			}
			valLoss = v
			rec.ValLoss = &v
		}
		if err := events(res.Events); err != nil {
			return nil, err
		}
		if err := jsonl.Write(rec); err != nil {
			return nil, err
		}
		if len(res.Spans) > 0 {
			recent = append(recent, res.Spans)
			if len(recent) > timelineSteps {
				recent = recent[1:]
			}
		}
		if o.Observer != nil {
			o.Observer.PublishStep(rec)
			if len(res.Spans) > 0 {
				o.Observer.PublishSpans(res.Spans)
			}
		}
		if prog.live() {
			prog.update(rec, valLoss)
		} else if done%cfg.Train.LogInterval == 0 || evalNow || done == start+1 {
			args := []any{"step", done, "of", cfg.Run.Steps, "loss", round4(res.Loss), "lr", fmt.Sprintf("%.2e", lr), "tokens_per_s", int(rec.TokensPerSecond)}
			if rec.ValLoss != nil {
				args = append(args, "val_loss", round4(*rec.ValLoss))
			}
			log.Info("step", args...)
		}
		ckptNow := done == cfg.Run.Steps || (cfg.Train.CheckpointInterval > 0 && done%cfg.Train.CheckpointInterval == 0)
		if ckptNow {
			err := saveRun(ctx, eng, cfg, o.Out, done, wall)
			if rolledBack(err, &step) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("step %d: checkpoint: %w", done, err)
			}
		}
	}
	prog.finish()
	if err := writeTimeline(filepath.Join(o.Out, "timeline.jsonl"), recent); err != nil {
		return nil, err
	}
	wall := time.Since(t0).Seconds()
	sum.FinalValLoss = valLoss
	sum.FinalTrainLoss = lastLoss
	sum.Tokens = int64(cfg.Run.Steps) * tokensPerStep
	sum.WallSeconds = wallBefore + wall
	if n := cfg.Run.Steps - start; n > 0 && wall > 0 {
		sum.TokensPerSecond = float64(int64(n)*tokensPerStep) / wall
	}
	sum.Checkpoint = filepath.Join(o.Out, CheckpointFile)
	if f, ok := eng.(interface{ faultStats() metrics.Summary }); ok {
		fs := f.faultStats()
		sum.Failures, sum.Recoveries, sum.RecoverySeconds = fs.Failures, fs.Recoveries, fs.RecoverySeconds
		sum.RejectedFrames, sum.StepsRedone, sum.FaultLog = fs.RejectedFrames, fs.StepsRedone, fs.FaultLog
	}
	if measured > 0 {
		tokens := float64(int64(measured) * tokensPerStep)
		if b := cfg.Pipeline.Stages - 1; b > 0 {
			sum.WireBytesPerTokenForward = float64(tot.WireForward) / tokens / float64(b)
			sum.WireBytesPerTokenBackward = float64(tot.WireBackward) / tokens / float64(b)
			if tot.WireForward > 0 {
				sum.CompressionRatioForward = float64(tot.RawForward) / float64(tot.WireForward)
			}
			if tot.WireBackward > 0 {
				sum.CompressionRatioBackward = float64(tot.RawBackward) / float64(tot.WireBackward)
			}
		}
		if all := tot.Busy + tot.Idle; all > 0 {
			sum.BubbleFraction = tot.Idle / all
			sum.NetworkWaitFraction = tot.NetWait / all
		}
	}
	if err := metrics.WriteJSON(filepath.Join(o.Out, "summary.json"), sum); err != nil {
		return nil, err
	}
	log.Info("run finished", "out", o.Out, "final_val_loss", round4(valLoss), "tokens_per_s", int(sum.TokensPerSecond), "wall_s", round4(sum.WallSeconds))
	return sum, nil
}

// writeTimeline writes spans, one JSON object per line, atomically.
func writeTimeline(path string, steps [][]metrics.Span) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, spans := range steps {
		for _, s := range spans {
			if err := enc.Encode(s); err != nil {
				return err
			}
		}
	}
	return metrics.WriteFileAtomic(path, b.Bytes())
}

// multiObserver passes every record to each of its observers.
type multiObserver []Observer

func (m multiObserver) PublishStep(r metrics.StepRecord) {
	for _, o := range m {
		o.PublishStep(r)
	}
}

func (m multiObserver) PublishSpans(s []metrics.Span) {
	for _, o := range m {
		o.PublishSpans(s)
	}
}

func (m multiObserver) PublishEvent(e metrics.Event) {
	for _, o := range m {
		o.PublishEvent(e)
	}
}

// enginePeers describes where the stages run, for the web view.
func enginePeers(cfg config.Config) []web.Peer {
	var peers []web.Peer
	for i := 0; i < cfg.Pipeline.Stages; i++ {
		p := web.Peer{ID: fmt.Sprintf("stage-%d", i), Stage: i, Address: "in-process", Candidate: "inproc", State: web.PeerActive}
		if cfg.Pipeline.Processes {
			p.Address, p.Candidate = "127.0.0.1 (own process)", "host"
		}
		peers = append(peers, p)
	}
	return peers
}

func accumulate(tot *stepResult, r stepResult) {
	tot.WireForward += r.WireForward
	tot.WireBackward += r.WireBackward
	tot.RawForward += r.RawForward
	tot.RawBackward += r.RawBackward
	tot.NetWait += r.NetWait
	tot.Busy += r.Busy
	tot.Idle += r.Idle
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }
