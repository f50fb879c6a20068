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
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/ledger"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
	"github.com/narrowband/narrowband/stages/kernels"
	"github.com/narrowband/narrowband/web"
)

// Observer is told about the run as it happens (the web view). Calls must
// not block: training never waits for an observer.
type Observer = engine.Observer

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
	// Force lets the run use an Out that holds something else (another
	// run's files are removed first).
	Force bool
	// Stop, when closed, asks the run to stop after the step in progress,
	// checkpoint it and return ErrStopped; cancelling ctx stops at once.
	Stop <-chan struct{}
}

// ErrStopped is what Run returns when Options.Stop asked it to stop; the
// error's text says what was saved and how to resume.
var ErrStopped = errors.New("stopped")

// timelineSteps is how many of the last steps' spans go to timeline.jsonl
// for the Gantt chart; the web view gets every step's live.
const timelineSteps = 5

// run is one run in progress: what Run set up, and what the loop has
// gathered so far.
type run struct {
	o      Options
	cfg    config.Config
	log    *slog.Logger
	corpus *data.Corpus
	eng    engine.Engine
	jsonl  *metrics.JSONL
	prog   *progress

	start, measured   int // first step of this process; steps measured
	resumeFrom        *stages.State
	saved             int       // step of the latest checkpoint on disk, -1 if none
	lastSave          time.Time // when it was written (or the run started)
	done              int       // steps done so far
	wallBefore        float64
	t0                time.Time
	lastLoss, valLoss float64
	valPerByte        float64             // valLoss per byte of the held-out text
	tok               *data.TokenizerFile // nil: bytes
	eval              [][]int32           // the held-out windows, cut once
	evalTokens        int64               // the ids they predict
	evalBytes         int64               // the bytes those ids' text has
	ownCorpus         bool                // loaded here (closed at the end), not given
	tot               engine.StepResult
	recent            [][]metrics.Span
	plan              engine.MemoryPlan
	peakRSS           []int64 // per stage, the largest its process reported
	ledger            *ledger.Writer
	prov              provenance
}

// Run trains according to o and returns the summary it also writes.
func Run(ctx context.Context, o Options) (_ *metrics.Summary, err error) {
	r := &run{o: o, cfg: o.Config, log: o.Log, corpus: o.Corpus, lastLoss: math.NaN(), valLoss: math.NaN(), valPerByte: math.NaN(), saved: -1}
	if err := r.cfg.Validate(); err != nil {
		return nil, err
	}
	if p := &r.cfg.Pipeline; p.Schedule == scheduler.Async && p.InFlight == 0 {
		// The depth the run uses, written into its resolved config and
		// given to every stage (and to the memory plan) as it is.
		p.InFlight = pipeline.InFlight(r.cfg)
	}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// Everything a resume needs is checked before anything is written.
	if o.Resume != "" {
		if r.resumeFrom, err = checkResume(o.Resume, r.cfg); err != nil {
			return nil, err
		}
		r.saved = r.resumeFrom.Step
	}
	lock, err := lockFolder(o.Out)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	if err := checkFolder(o.Out, o.Resume != "" && sameDir(o.Resume, o.Out), o.Force); err != nil {
		return nil, err
	}
	// A stop request cancels the setup at once (waiting for peers, say)
	// and gives a step in progress a grace to finish.
	stepCtx, cancelSteps := context.WithCancel(ctx)
	defer cancelSteps()
	var training atomic.Bool
	var lastStep atomic.Int64
	go func() {
		select {
		case <-o.Stop:
		case <-stepCtx.Done():
			return
		}
		if training.Load() {
			grace := max(time.Second, 3*time.Duration(lastStep.Load()))
			select {
			case <-time.After(grace):
			case <-stepCtx.Done():
				return
			}
		}
		cancelSteps()
	}()
	// train.threads bounds this process's compute when it runs stages
	// itself (worker processes and peers bound their own).
	if n := r.cfg.Train.Threads; n > 0 && r.cfg.Pipeline.Transport == "inproc" && !r.cfg.Pipeline.Processes {
		procs, kt := runtime.GOMAXPROCS(n), kernels.ThreadsSetting()
		kernels.SetThreads(n)
		defer func() { runtime.GOMAXPROCS(procs); kernels.SetThreads(kt) }()
	}
	defer func() {
		if r.ownCorpus {
			r.corpus.Close() // after the engine's Close (defers run last first)
		}
	}()
	if err := r.setup(stepCtx); err != nil {
		if ctx.Err() == nil && stepCtx.Err() != nil {
			return nil, fmt.Errorf("%w while setting up, before any training: %v", ErrStopped, err)
		}
		return nil, err
	}
	defer r.eng.Close()
	defer r.jsonl.Close()
	defer r.ledger.Close()
	if o.Web != nil {
		defer func() {
			// The room is gone: a tab has nothing left to join.
			o.Web.SetContribute(nil)
			if err != nil {
				o.Web.SetStatus("stopped: " + err.Error())
			} else {
				o.Web.SetStatus("finished")
			}
		}()
	}
	r.prog = newProgress(o.Progress, r.cfg.Run.Steps)
	r.t0, r.lastSave, r.done = time.Now(), time.Now(), r.start
	training.Store(true)
	for step := r.start; step < r.cfg.Run.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return nil, r.stopped(fmt.Errorf("stopped at step %d: %w", step, err))
		}
		select {
		case <-o.Stop:
			return nil, r.stopSoftly(ctx)
		default:
		}
		t := time.Now()
		next, err := r.step(stepCtx, step)
		lastStep.Store(int64(time.Since(t)))
		if err != nil {
			if ctx.Err() != nil {
				return nil, r.stopped(fmt.Errorf("stopped during step %d: %w", step+1, ctx.Err()))
			}
			if stepCtx.Err() != nil {
				return nil, r.stopped(fmt.Errorf("%w during step %d, which did not finish within its grace after the stop request", ErrStopped, step+1))
			}
			return nil, r.failed(err)
		}
		step = next
	}
	return r.finish()
}

// checkResume reads what dir holds to resume and checks it fits cfg.
func checkResume(dir string, cfg config.Config) (*stages.State, error) {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("resume: %s is not a run folder (%v); give the --out folder of the run to continue", dir, err)
	}
	st, md, err := stages.ReadState(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, fmt.Errorf("resume: %w (the run saved no checkpoint yet, or this is not a run folder)", err)
	}
	if err := sameTokenizer(md, cfg); err != nil {
		return nil, fmt.Errorf("resume: %s: %w", dir, err)
	}
	if want := engine.ModelConfig(cfg); st.Model != want {
		return nil, fmt.Errorf("resume: %s holds a model %+v but the config asks for %+v; resume with the run's own config.toml", dir, st.Model, want)
	}
	if st.Step >= cfg.Run.Steps {
		return nil, fmt.Errorf("resume: %s already finished: its checkpoint is at step %d and run.steps = %d. To train it further, raise run.steps (e.g. --set run.steps=%d)", dir, st.Step, cfg.Run.Steps, 2*st.Step)
	}
	return st, nil
}

func sameDir(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// stopSoftly checkpoints the last step done and says how to go on.
func (r *run) stopSoftly(ctx context.Context) error {
	if r.done > r.saved {
		if err := r.checkpoint(ctx, r.done); err != nil {
			return r.stopped(fmt.Errorf("%w after step %d of %d, but the checkpoint failed: %v", ErrStopped, r.done, r.cfg.Run.Steps, err))
		}
	}
	return fmt.Errorf("%w after step %d of %d: saved %s (step %d); resume with: %s", ErrStopped, r.done, r.cfg.Run.Steps,
		filepath.Join(r.o.Out, StateFile), r.saved, r.resumeCommand())
}

// stopped adds what is on disk to the error of a run stopped at once.
func (r *run) stopped(err error) error {
	if r.saved < 0 {
		return fmt.Errorf("%w; no checkpoint was saved yet (train.checkpoint_minutes, train.checkpoint_interval)", err)
	}
	return fmt.Errorf("%w; the latest checkpoint is step %d in %s; resume with: %s", err, r.saved, r.o.Out, r.resumeCommand())
}

// failed saves what the engine still holds of the run (a pipeline's
// latest snapshot) if it is newer than the latest checkpoint, and says
// what is on disk.
func (r *run) failed(err error) error {
	if s, ok := r.eng.(engine.Snapshotter); ok {
		if st := s.Snapshot(); st != nil && st.Step > r.saved {
			if werr := r.write(st, st.Step, r.wallBefore+time.Since(r.t0).Seconds()); werr != nil {
				r.log.Error("save the last snapshot after a failure", "err", werr)
			}
		}
	}
	return r.stopped(err)
}

func (r *run) resumeCommand() string {
	return fmt.Sprintf("narrowband run %s --resume %s", filepath.Join(r.o.Out, "config.toml"), r.o.Out)
}

// setup loads the data, writes the resolved config, builds the engine and
// opens metrics.jsonl (continuing it when resuming).
func (r *run) setup(ctx context.Context) error {
	o, cfg := r.o, r.cfg
	// What the model will take is checked before anything is allocated
	// or read: every stage runs on this machine unless peers join from
	// elsewhere.
	avail := engine.Available()
	layout, err := engine.Layout(cfg)
	if err != nil {
		return err
	}
	plan, err := engine.PlanMemory(cfg, layout)
	if err != nil {
		return err
	}
	r.plan, r.peakRSS = plan, make([]int64, len(plan.Stages))
	r.logPlan(layout)
	if !remoteStages(cfg) {
		if err := engine.CheckMemory(fmt.Sprintf("the model (%d stage(s), train.batch_size %d, model.block_size %d)", layout.Stages(), cfg.Train.BatchSize, cfg.Model.BlockSize), plan.Total(), avail); err != nil {
			return err
		}
	}
	if r.corpus == nil {
		maxBytes := cfg.Data.MaxBytes
		if maxBytes == 0 && avail > 0 {
			maxBytes = int64(max(avail-plan.Total(), 0) / 2) // the text is held twice while it is split
		}
		if err := r.loadCorpus(ctx, maxBytes); err != nil {
			return err
		}
	}
	if err := r.loadTokenizer(); err != nil { // a corpus given by the caller
		return err
	}
	if r.tok != nil && r.corpus.Vocab != r.tok.VocabSize() {
		return fmt.Errorf("data: the corpus given has %d token ids but data.tokenizer %s has %d", r.corpus.Vocab, cfg.Data.Tokenizer, r.tok.VocabSize())
	}
	if need := int64(cfg.Train.EvalBatches*cfg.Train.BatchSize) * int64(cfg.Model.BlockSize+1); int64(r.corpus.Val.Len()) < need {
		r.log.Warn("the held-out text is shorter than one evaluation reads: its windows overlap, so the held-out loss is measured on fewer tokens than it seems; raise data.val_fraction or lower train.eval_batches",
			"held_out_tokens", r.corpus.Val.Len(), "evaluation_tokens", need)
	}
	if err := r.writeDataFiles(); err != nil {
		return err
	}
	if r.tok != nil {
		// The resolved config names the run folder's own copy (the same
		// bytes, by hash), so the folder alone resumes and evaluates.
		r.cfg.Data.Tokenizer = filepath.Join(o.Out, data.TokenizerName)
		cfg = r.cfg
	}
	resolved, err := cfg.TOML()
	if err != nil {
		return err
	}
	if err := metrics.WriteFileAtomic(filepath.Join(o.Out, "config.toml"), resolved); err != nil {
		return err
	}
	if o.Resume != "" {
		r.start = r.resumeFrom.Step
	}
	if err := r.openRecord(resolved); err != nil {
		return err
	}
	if o.Web != nil {
		o.Web.SetRun(web.RunInfo{Name: cfg.Run.Name, Seed: int64(cfg.Run.Seed), Config: string(resolved), TotalSteps: cfg.Run.Steps, Start: time.Now()})
		o.Web.SetStatus("starting " + strconv.Itoa(cfg.Pipeline.Stages) + " stage(s)")
		var obs engine.Observers
		if o.Observer != nil {
			obs = append(obs, o.Observer)
		}
		r.o.Observer = append(obs, o.Web)
	}
	if r.eng, err = newEngine(ctx, cfg, r.corpus, r.log, o.Out, offerRoom(cfg, o.Web)); err != nil {
		return err
	}
	if h, ok := r.eng.(engine.Hooked); ok {
		hooks := engine.Hooks{Event: func(ev metrics.Event) {
			if err := r.events([]metrics.Event{ev}); err != nil {
				r.log.Error("write event", "err", err)
			}
		}}
		if o.Web != nil {
			hooks.Status, hooks.Peers = o.Web.SetStatus, o.Web.SetPeers
		}
		h.SetHooks(hooks)
	}
	if o.Web != nil {
		o.Web.SetStatus("training")
	}
	if o.Resume == "" {
		r.jsonl, err = metrics.CreateJSONL(filepath.Join(o.Out, "metrics.jsonl"))
		if err != nil {
			r.eng.Close()
		}
		return err
	}
	if err := r.resume(ctx); err != nil {
		r.eng.Close()
		return err
	}
	return nil
}

// resume loads the state of o.Resume into the engine and continues its
// metrics.jsonl.
func (r *run) resume(ctx context.Context) error {
	o, st := r.o, r.resumeFrom
	if err := r.eng.Restore(ctx, st); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	r.start, r.wallBefore = st.Step, st.WallSeconds
	var err error
	if !sameDir(o.Resume, o.Out) {
		if b, err := os.ReadFile(filepath.Join(o.Resume, "metrics.jsonl")); err == nil {
			if err := metrics.WriteFileAtomic(filepath.Join(o.Out, "metrics.jsonl"), b); err != nil {
				return err
			}
		}
	}
	if r.jsonl, err = metrics.ResumeJSONL(filepath.Join(o.Out, "metrics.jsonl"), r.start); err != nil {
		return err
	}
	r.log.Info("resumed", "from", o.Resume, "step", r.start)
	return nil
}

// step runs optimizer step `step` (0-based) with its evaluation and
// checkpoint, and returns the step the loop goes on from (itself, or the
// step before a rollback's target: the loop's increment lands on it).
func (r *run) step(ctx context.Context, step int) (int, error) {
	cfg := r.cfg
	lr := learningRate(step, cfg.Train.WarmupSteps, cfg.Run.Steps, cfg.Train.LearningRate, cfg.Train.MinLR)
	ts := time.Now()
	res, err := r.eng.Step(ctx, step, lr)
	if to, ok := rolledBack(err); ok {
		r.done = to
		return to - 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("step %d: %w", step+1, err)
	}
	if math.IsNaN(res.Loss) || math.IsInf(res.Loss, 0) {
		return 0, fmt.Errorf("step %d: the loss is %v; lower train.learning_rate or raise train.warmup_steps", step+1, res.Loss)
	}
	dt := time.Since(ts).Seconds()
	r.lastLoss = res.Loss
	done := step + 1
	wall := r.wallBefore + time.Since(r.t0).Seconds()
	tokensPerStep := int64(cfg.Train.BatchSize * cfg.Model.BlockSize)
	rec := metrics.StepRecord{
		Step: done, Tokens: int64(done) * tokensPerStep, Loss: res.Loss, LR: lr,
		TokensPerSecond: float64(tokensPerStep) / dt, WallSeconds: wall, GradNorm: res.GradNorm,
		Stages: res.Stages, Links: res.Links, ReplicaBytes: res.WireReplicas, ReplicaRawBytes: res.RawReplicas,
	}
	for _, s := range res.Stages {
		if s.Stage >= 0 && s.Stage < len(r.peakRSS) {
			r.peakRSS[s.Stage] = max(r.peakRSS[s.Stage], s.PeakRSS)
		}
	}
	if step > r.start { // the first step warms caches and connections
		r.tot.Add(res)
		r.measured++
	}
	evalNow := done == cfg.Run.Steps || (cfg.Train.EvalInterval > 0 && done%cfg.Train.EvalInterval == 0)
	if evalNow {
		v, err := r.eng.Eval(ctx, r.evalWindows())
		if to, ok := rolledBack(err); ok {
			return to - 1, nil
		}
		if err != nil {
			return 0, fmt.Errorf("step %d: evaluation: %w", done, err)
		}
		r.valLoss, r.valPerByte = v, r.perByte(v)
		pb := r.valPerByte
		rec.ValLoss, rec.ValLossPerByte = &v, &pb
	}
	if err := r.record(rec, res, evalNow, lr); err != nil {
		return 0, err
	}
	r.done = done
	byTime := cfg.Train.CheckpointMinutes > 0 && time.Since(r.lastSave).Minutes() >= cfg.Train.CheckpointMinutes
	if cfg.Pipeline.Schedule == scheduler.Async && cfg.Pipeline.Stages > 1 {
		// Async stages hold a copy for a checkpoint only at the steps
		// they know of in advance: a checkpoint due by time waits for the
		// next of them.
		byTime = byTime && engine.KeepsState(cfg, done)
	}
	if done == cfg.Run.Steps || byTime || (cfg.Train.CheckpointInterval > 0 && done%cfg.Train.CheckpointInterval == 0) {
		err := r.checkpoint(ctx, done)
		if to, ok := rolledBack(err); ok {
			return to - 1, nil
		}
		if err != nil {
			return 0, fmt.Errorf("step %d: checkpoint: %w", done, err)
		}
	}
	return step, nil
}

// logPlan says, before anything is allocated, what each stage will hold.
func (r *run) logPlan(layout scheduler.Layout) {
	mb := func(x float64) int { return int(math.Round(x / 1e6)) }
	for i, m := range r.plan.Detail {
		rg := layout.Range(i)
		r.log.Info("memory plan", "stage", i, "blocks", fmt.Sprintf("%d-%d", rg.Lo, rg.Hi), "total_mb", mb(m.Total()),
			"weights_and_grads_mb", mb(m.Params+m.Grads), "optimizer_mb", mb(m.AdamW), "activations_mb", mb(float64(m.Slots)*m.PerSlot+m.Scratch), "micro_batches_held", m.Slots)
		if i < len(r.plan.Process) {
			r.log.Info("memory plan", "stage", i, "process_mb", mb(r.plan.Process[i]), "state_copy_mb", mb(engine.StateCopy(m)), "runtime_mb", mb(engine.Overhead(r.cfg)))
		}
	}
	if r.plan.Snapshot > 0 {
		r.log.Info("memory plan", "coordinator_snapshot_mb", mb(r.plan.Snapshot))
	}
}

// memoryAccount is the plan beside what each stage's process really used.
func (r *run) memoryAccount() []metrics.StageMemory {
	var out []metrics.StageMemory
	for i, m := range r.plan.Detail {
		a := metrics.StageMemory{Stage: i, PlannedBytes: int64(m.Total()), WeightsBytes: int64(m.Params + m.Grads),
			OptimizerBytes: int64(m.AdamW), ActivationBytes: int64(float64(m.Slots)*m.PerSlot + m.Scratch)}
		if i < len(r.plan.Process) {
			a.ProcessBytes = int64(r.plan.Process[i])
			if i < len(r.peakRSS) && r.peakRSS[i] > 0 {
				a.PeakRSSBytes = r.peakRSS[i]
				a.PeakOverPlan = float64(a.PeakRSSBytes) / r.plan.Process[i]
			}
		}
		out = append(out, a)
	}
	return out
}

// remoteStages reports whether stages may run on other machines (a WebRTC
// run that starts fewer local peers than stages): then this machine's
// memory bounds only its own part.
func remoteStages(cfg config.Config) bool {
	return cfg.Pipeline.Transport == "webrtc" && cfg.Pipeline.LocalPeers >= 0 && cfg.Pipeline.LocalPeers < cfg.Pipeline.Stages
}

// evalWindows are the held-out windows every evaluation scores, the same
// every time: they are cut once, with the bytes their targets cover.
func (r *run) evalWindows() [][]int32 {
	if r.eval == nil {
		c := r.cfg
		r.eval = data.EvalWindows(r.corpus.Val, uint64(c.Run.Seed), c.Train.EvalBatches*c.Train.BatchSize, c.Model.BlockSize)
		r.evalTokens, r.evalBytes = 0, 0
		for _, w := range r.eval {
			for _, id := range w[1:] {
				r.evalTokens++
				r.evalBytes += int64(r.corpus.TokenBytes(id))
			}
		}
	}
	return r.eval
}

// perByte turns a held-out loss per token into nats per byte of the text
// its targets cover: the same windows' loss summed, over their bytes.
func (r *run) perByte(loss float64) float64 {
	if r.evalBytes == 0 {
		return math.NaN()
	}
	return loss * float64(r.evalTokens) / float64(r.evalBytes)
}

// record writes a step's events and record, keeps its spans for the
// timeline, publishes it and shows progress.
func (r *run) record(rec metrics.StepRecord, res engine.StepResult, evalNow bool, lr float64) error {
	if err := r.events(res.Events); err != nil {
		return err
	}
	if err := r.jsonl.Write(rec); err != nil {
		return err
	}
	if err := r.recordStep(rec.Step, res); err != nil {
		return err
	}
	if len(res.Spans) > 0 {
		r.recent = append(r.recent, res.Spans)
		if len(r.recent) > timelineSteps {
			r.recent = r.recent[1:]
		}
	}
	if obs := r.o.Observer; obs != nil {
		obs.PublishStep(rec)
		if len(res.Spans) > 0 {
			obs.PublishSpans(res.Spans)
		}
	}
	if r.prog.live() {
		r.prog.update(rec, r.valLoss)
	} else if rec.Step%r.cfg.Train.LogInterval == 0 || evalNow || rec.Step == r.start+1 {
		args := []any{"step", rec.Step, "of", r.cfg.Run.Steps, "loss", round4(res.Loss), "lr", fmt.Sprintf("%.2e", lr), "tokens_per_s", int(rec.TokensPerSecond)}
		if rec.ValLoss != nil {
			args = append(args, "val_loss", round4(*rec.ValLoss))
		}
		if rec.ValLossPerByte != nil && r.tok != nil {
			args = append(args, "val_loss_per_byte", round4(*rec.ValLossPerByte))
		}
		r.log.Info("step", args...)
	}
	return nil
}

// events logs, records and publishes what happened besides training.
func (r *run) events(evs []metrics.Event) error {
	for _, ev := range evs {
		r.log.Info("event", "kind", ev.Kind, "step", ev.Step, "detail", ev.Detail)
		if err := r.jsonl.Write(ev); err != nil {
			return err
		}
		if r.o.Observer != nil {
			r.o.Observer.PublishEvent(ev)
		}
	}
	return nil
}

// finish writes the timeline and the summary.
func (r *run) finish() (*metrics.Summary, error) {
	cfg, o := r.cfg, r.o
	r.prog.finish()
	if err := writeTimeline(filepath.Join(o.Out, "timeline.jsonl"), r.recent); err != nil {
		return nil, err
	}
	wall := time.Since(r.t0).Seconds()
	tokensPerStep := int64(cfg.Train.BatchSize * cfg.Model.BlockSize)
	sum := &metrics.Summary{
		Name: cfg.Run.Name, Seed: uint64(cfg.Run.Seed), Steps: cfg.Run.Steps, Params: r.eng.Params(),
		Stages: cfg.Pipeline.Stages, Schedule: cfg.Pipeline.Schedule.String(), Transport: cfg.Pipeline.Transport,
		Compression: cfg.Compression.Method.String(), ResumedFromStep: r.start,
		FinalValLoss: r.valLoss, FinalTrainLoss: r.lastLoss,
		Tokens: int64(cfg.Run.Steps) * tokensPerStep, WallSeconds: r.wallBefore + wall,
		Checkpoint: filepath.Join(o.Out, CheckpointFile),
		LedgerHead: r.ledger.Head(), ConfigHash: r.prov.configHash, DataHash: r.prov.dataHash, CodeVersion: r.prov.code,
	}
	sum.Memory = r.memoryAccount()
	if !math.IsNaN(r.valPerByte) {
		sum.FinalValLossPerByte = r.valPerByte
	}
	if n := cfg.Run.Steps - r.start; n > 0 && wall > 0 {
		sum.TokensPerSecond = float64(int64(n)*tokensPerStep) / wall
	}
	if f, ok := r.eng.(engine.FaultCounter); ok {
		fs := f.Faults()
		sum.Failures, sum.Recoveries, sum.RecoverySeconds = fs.Failures, fs.Recoveries, fs.RecoverySeconds
		sum.RejectedFrames, sum.StepsRedone, sum.FaultLog = fs.RejectedFrames, fs.StepsRedone, fs.FaultLog
		sum.Swarm = fs.Swarm
	}
	if r.measured > 0 {
		tot := r.tot
		tokens := float64(int64(r.measured) * tokensPerStep)
		if b := cfg.Pipeline.Stages - 1; b > 0 {
			sum.WireBytesPerTokenForward = float64(tot.WireForward) / tokens / float64(b)
			sum.WireBytesPerTokenBackward = float64(tot.WireBackward) / tokens / float64(b)
			if tot.WireForward > 0 {
				sum.CompressionRatioForward = float64(tot.RawForward) / float64(tot.WireForward)
			}
			if tot.WireBackward > 0 {
				sum.CompressionRatioBackward = float64(tot.RawBackward) / float64(tot.WireBackward)
			}
			sum.TiedBytesPerToken = float64(tot.WireTied) / tokens
		}
		sum.ReplicaBytesPerStep = float64(tot.WireReplicas) / float64(r.measured)
		if tot.WireReplicas > 0 {
			sum.ReplicaCompressionRatio = float64(tot.RawReplicas) / float64(tot.WireReplicas)
		}
		if all := tot.Busy + tot.Idle; all > 0 {
			sum.BubbleFraction = tot.Idle / all
			sum.NetworkWaitFraction = tot.NetWait / all
		}
	}
	if err := metrics.WriteJSON(filepath.Join(o.Out, "summary.json"), sum); err != nil {
		return nil, err
	}
	r.log.Info("run finished", "out", o.Out, "final_val_loss", round4(r.valLoss), "final_val_loss_per_byte", round4(r.valPerByte), "tokens_per_s", int(sum.TokensPerSecond), "wall_s", round4(sum.WallSeconds))
	return sum, nil
}

// rolledBack reports whether err is the engine going back to an earlier
// step (a stage changed hands), and to which: the redone steps' records
// follow the rollback event.
func rolledBack(err error) (int, bool) {
	var rb *engine.RollbackError
	if !errors.As(err, &rb) {
		return 0, false
	}
	return rb.To, true
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

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }
