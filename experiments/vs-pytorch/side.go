package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/runtime/launch"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
	"github.com/narrowband/narrowband/stages/kernels"
)

// dataSeed is the run's seed (run.seed): it picks the training windows
// (data.Batch) and, through the engines, initializes the weights.
const dataSeed = 1

// lr is small and constant: this measures speed, not a training recipe.
const lr = 1e-4

// textLimit bounds the training text both sides read: the same first
// 8 MiB of .go files (sorted walk, no tests, no testdata) as
// train_torch.py's load_bytes, so both train on identical bytes and neither
// side's peak memory is the corpus.
const textLimit = 8 << 20

// textSHA identifies the text loadText read (printed with the result).
var textSHA string

func loadText(o options) ([]byte, error) {
	var out []byte
	var walk func(dir string) error
	walk = func(dir string) error {
		ents, err := os.ReadDir(dir) // sorted by name, as the Python side sorts
		if err != nil {
			return err
		}
		// os.walk lists a folder's files before descending into its
		// subfolders: do the same.
		for _, e := range ents {
			n := e.Name()
			if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, n))
			if err != nil {
				return err
			}
			out = append(out, b...)
			if len(out) >= textLimit {
				out = out[:textLimit]
				return io.EOF
			}
		}
		for _, e := range ents {
			if e.IsDir() && e.Name() != "testdata" {
				if err := walk(filepath.Join(dir, e.Name())); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(o.src); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read the training text under %s: %w (pass -src a folder of .go files)", o.src, err)
	}
	sum := sha256.Sum256(out)
	textSHA = hex.EncodeToString(sum[:8])
	if len(out) < 2*129 {
		return nil, fmt.Errorf("only %d bytes of .go files under %s: pass -src a folder of Go source", len(out), o.src)
	}
	return out, nil
}

// newCorpus wraps the training text for the engines. Nothing here
// evaluates, so the held-out part is just the text's last 64 KiB.
func newCorpus(src string, text []byte) *data.Corpus {
	return &data.Corpus{Source: src, Train: data.Bytes(text), Val: data.Bytes(text[len(text)-min(len(text), 64<<10):]), TrainDocs: 1, ValDocs: 1, Vocab: 256}
}

// newConfig is the run config of one measurement: model m, batch sequences
// per step in micro micro-batches, S stages (S > 1: GPipe, one OS process
// per stage, as pipeline.processes = true), threads compute threads per
// process, a constant learning rate and no gradient clipping, AdamW as
// config.Default has it (stages.DefaultAdamWConfig, as train_torch.py).
func newConfig(m stages.Config, batch, micro, S, threads int) (config.Config, error) {
	c := config.Default()
	c.Run.Name, c.Run.Seed = "vs-pytorch", dataSeed
	c.Model = m
	c.Train.BatchSize, c.Train.MicroBatches, c.Train.Threads = batch, micro, threads
	c.Train.LearningRate, c.Train.MinLR, c.Train.WarmupSteps = lr, lr, 0
	c.Train.GradClip = 0
	c.Pipeline.Stages = S
	if S > 1 {
		c.Pipeline.Schedule, c.Pipeline.Processes = scheduler.GPipe, true
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("run config (-batch %d, -micro %d): %w", batch, micro, err)
	}
	return c, nil
}

// runWhole trains the whole model in this process (engine.Local, the
// engine of a one-stage run) and prints its result.
func runWhole(o options, threads int) error {
	if threads > 0 {
		// engine.Local does not apply train.threads itself (only worker
		// processes do): bound this process as a run on this many cores.
		runtime.GOMAXPROCS(threads)
		kernels.SetThreads(threads)
	}
	text, err := loadText(o)
	if err != nil {
		return err
	}
	cfg, err := newConfig(stages.DefaultConfig(), o.batch, 1, 1, threads)
	if err != nil {
		return err
	}
	e, err := engine.NewLocal(cfg, newCorpus(o.src, text))
	if err != nil {
		return err
	}
	defer e.Close()
	r, err := measure(o, e, selfUsage)
	if err != nil {
		return err
	}
	r.Side = "go"
	return json.NewEncoder(os.Stdout).Encode(r)
}

// runPipeline drives the model cut into two stages, each in a worker
// process of its own pinned to its own core, and prints its result: the
// workers' CPU time and peak memory (summed), this process's wall time.
func runPipeline(o options) error {
	text, err := loadText(o)
	if err != nil {
		return err
	}
	cfg, err := newConfig(stages.DefaultConfig(), o.batch, o.micro, 2, 1)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := startPipeline(context.Background(), cfg, newCorpus(o.src, text), log)
	if err != nil {
		return err
	}
	defer p.Close()
	c0 := selfCPU()
	r, err := measure(o, p, p.workerUsage)
	if err != nil {
		return err
	}
	r.Side = "pipeline"
	r.DriverCPUS = selfCPU() - c0
	r.Label = fmt.Sprintf("narrowband 2 stages, 1 thread each, pinned to cores %s", strings.Join(p.cores, " and "))
	return json.NewEncoder(os.Stdout).Encode(r)
}

// stepper is what measure drives: engine.Local or pipeline.Driver.
type stepper interface {
	Step(ctx context.Context, step int, lr float64) (engine.StepResult, error)
}

// usage reports the CPU seconds spent so far and the peak RSS of what a
// measurement counts.
type usage func() (cpuS float64, peakRSS int64, err error)

// measure runs o.warmup steps, then o.steps timed ones, and reports them:
// wall and CPU time of the timed steps, peak RSS at the end, the last
// step's loss.
func measure(o options, e stepper, use usage) (result, error) {
	ctx := context.Background()
	for i := 0; i < o.warmup; i++ {
		if _, err := e.Step(ctx, i, lr); err != nil {
			return result{}, fmt.Errorf("warm-up step %d: %w", i, err)
		}
	}
	c0, _, err := use()
	if err != nil {
		return result{}, err
	}
	w0 := time.Now()
	var loss float64
	for i := 0; i < o.steps; i++ {
		res, err := e.Step(ctx, o.warmup+i, lr)
		if err != nil {
			return result{}, fmt.Errorf("step %d: %w", o.warmup+i, err)
		}
		loss = res.Loss
	}
	wall := time.Since(w0).Seconds()
	c1, rss, err := use()
	if err != nil {
		return result{}, err
	}
	cpu := c1 - c0
	tokens := o.steps * o.batch * stages.DefaultConfig().BlockSize
	return result{
		Steps: o.steps, Tokens: tokens, WallS: wall, CPUS: cpu,
		TokensPerS: float64(tokens) / wall, TokensPerCPUS: float64(tokens) / cpu,
		Loss: loss, PeakRSS: rss, DataSHA: textSHA,
	}, nil
}

// selfUsage is this process's CPU time and peak RSS.
func selfUsage() (float64, int64, error) {
	rss, err := vmHWM("self")
	return selfCPU(), rss, err
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// stagePipeline is a pipeline.Driver over worker processes it started,
// each pinned to a core, with what measure needs to count their usage.
type stagePipeline struct {
	*pipeline.Driver
	pids  []int    // the worker processes (this process's children)
	cores []string // each worker's allowed CPUs, as /proc lists them
}

// startPipeline starts cfg's pipeline as a run with pipeline.processes =
// true does (engine.Layout, launch.Processes, pipeline.New), with this
// executable as the worker process and stage i pinned to the i-th CPU this
// process may run on (modulo their number).
func startPipeline(ctx context.Context, cfg config.Config, corpus *data.Corpus, log *slog.Logger) (*stagePipeline, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary to run as the worker process: %w", err)
	}
	launch.WorkerCommand = func() ([]string, error) { return []string{self}, nil }
	layout, err := engine.Layout(cfg)
	if err != nil {
		return nil, err
	}
	cores, err := stageCores(layout.Stages())
	if err != nil {
		return nil, err
	}
	// The workers inherit this process's environment when they start.
	os.Setenv(pinEnv, cores)
	place, err := launch.Processes(ctx, cfg, layout)
	os.Unsetenv(pinEnv)
	if err != nil {
		return nil, err
	}
	d, err := pipeline.New(cfg, layout, corpus, place, log)
	if err != nil {
		return nil, err
	}
	p := &stagePipeline{Driver: d}
	if p.pids, err = children(); err == nil && len(p.pids) != layout.Stages() {
		err = fmt.Errorf("found %d child processes %v, want one worker per stage (%d)", len(p.pids), p.pids, layout.Stages())
	}
	for _, pid := range p.pids {
		if err != nil {
			break
		}
		var c string
		c, err = procStatus(fmt.Sprint(pid), "Cpus_allowed_list:")
		p.cores = append(p.cores, c)
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("pipeline workers: %w", err)
	}
	return p, nil
}

// workerUsage is the workers' CPU time and peak RSS, summed.
func (p *stagePipeline) workerUsage() (float64, int64, error) {
	var cpu float64
	var rss int64
	for _, pid := range p.pids {
		c, err := procCPU(pid)
		if err != nil {
			return 0, 0, err
		}
		r, err := vmHWM(fmt.Sprint(pid))
		if err != nil {
			return 0, 0, err
		}
		cpu, rss = cpu+c, rss+r
	}
	return cpu, rss, nil
}
