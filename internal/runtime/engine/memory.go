package engine

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// MemoryPlan is what a run will allocate, estimated before anything is: per
// stage, the parameters, gradients and AdamW moments, the activations of
// every micro-batch in flight and the backward scratch (stages.MemoryBytes
// plus the moments); and the coordinator's snapshot of the whole model
// where stages can change hands.
type MemoryPlan struct {
	Stages   []float64       // bytes per stage
	Detail   []stages.Memory // the same, by kind
	Snapshot float64         // bytes the coordinator keeps to roll back to
	// Process is, where each stage has a process of its own (stage
	// processes, WebRTC peers), what that process holds: the stage, one
	// serialized copy of its state (weights and both moments, made for
	// every checkpoint and snapshot) and ProcessOverhead. nil otherwise.
	Process []float64
}

// ProcessOverhead is what a WebRTC peer process holds besides its stage
// and the copy of its state: the binary's code, the Go runtime, pion's
// buffers, and the garbage collector's headroom (rtc.GCHeadroom, 64 MiB).
// Measured: the quickstart's two WebRTC peers (narrowband run
// experiments/quickstart.toml --set pipeline.transport='"webrtc"') peaked
// 126–129 MB above their stage and state copy. A stage process on
// loopback TCP needs far less: the tiny model's peaked at 18 MB.
const ProcessOverhead = 128 << 20

// TCPProcessOverhead is ProcessOverhead for a stage process of
// pipeline.processes (no WebRTC stack, Go's default collector).
const TCPProcessOverhead = 16 << 20

// Overhead is the per-process overhead of cfg's stage processes.
func Overhead(cfg config.Config) float64 {
	if cfg.Pipeline.Transport == "webrtc" {
		return ProcessOverhead
	}
	return TCPProcessOverhead
}

// StateCopy is the bytes of a stage's serialized state: weights and both
// AdamW moments.
func StateCopy(m stages.Memory) float64 { return m.Params + m.AdamW }

// Total is the plan's bytes on one machine that holds every stage.
func (p MemoryPlan) Total() float64 {
	t := p.Snapshot
	for _, s := range p.Stages {
		t += s
	}
	return t
}

// PlanMemory estimates the run's memory for cfg cut as layout.
func PlanMemory(cfg config.Config, layout scheduler.Layout) (MemoryPlan, error) {
	m := ModelConfig(cfg)
	M := cfg.Train.MicroBatches
	B := cfg.Train.BatchSize / M
	var p MemoryPlan
	var weights []float64 // each stage's weights, once
	for i := 0; i < layout.Stages(); i++ {
		r := layout.Range(i)
		slots := 1
		if layout.Stages() > 1 {
			spec := scheduler.Pipeline{Schedule: cfg.Pipeline.Schedule, Stages: layout.Stages(), Micro: M, Lookahead: cfg.Pipeline.Lookahead, InFlight: cfg.Pipeline.InFlight}
			w, err := spec.MaxInFlight(i)
			if err != nil {
				return MemoryPlan{}, err
			}
			slots = w + 1 // and one for evaluation
		}
		est := stages.EstimateMemory(m, r.Lo, r.Hi, layout.First(i), layout.Last(i), B, slots)
		weights = append(weights, est.Params)
		if cfg.Pipeline.Schedule == scheduler.Async && layout.Stages() > 1 {
			asyncMemory(&est, cfg, layout, i)
		}
		p.Stages = append(p.Stages, est.Total())
		p.Detail = append(p.Detail, est)
		if cfg.Pipeline.Processes || cfg.Pipeline.Transport == "webrtc" {
			p.Process = append(p.Process, est.Total()+StateCopy(est)+Overhead(cfg))
		}
	}
	if cfg.Pipeline.Transport == "webrtc" || snapshots(cfg) {
		// Weights and both moments, and their encoding for a restore.
		p.Snapshot = 2 * 3 * 4 * float64(m.NumParams())
	}
	if snapshots(cfg) && cfg.Faults.SnapshotEvery < cfg.Run.Steps {
		// Each stage's weight versions for a restart (and their encoding).
		for i, w := range weights {
			spec := scheduler.Pipeline{Schedule: scheduler.Async, Stages: layout.Stages(), Micro: M, InFlight: cfg.Pipeline.InFlight}
			if am, err := scheduler.NewAsyncMachine(spec, i, cfg.Run.Steps); err == nil {
				p.Snapshot += 2 * float64(asyncHistory(am)) * w
			}
		}
	}
	return p, nil
}

// ErrNoMemory is a run (or a checkpoint) that needs more memory than this
// machine has available.
var ErrNoMemory = errors.New("not enough memory")

// CheckMemory refuses a plan of need bytes on a machine with avail bytes
// available (avail 0: unknown, nothing is refused), saying both.
func CheckMemory(what string, need, avail float64) error {
	if avail > 0 && need > 0.9*avail {
		return fmt.Errorf("%w: %s needs about %.2f GB, and this machine has %.2f GB available; lower train.batch_size (or raise train.micro_batches), model.block_size, model.n_embd or model.n_layer, or cut the model into more stages on more machines",
			ErrNoMemory, what, need/1e9, avail/1e9)
	}
	return nil
}

// Available is the memory this machine can give a new process now
// (MemAvailable of /proc/meminfo, or the cgroup's limit if lower); 0 if it
// cannot tell.
func Available() float64 {
	avail := meminfo("MemAvailable:")
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lim, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		if err == nil && lim > 0 && lim < 1<<60 {
			used := 0.0
			for _, u := range []string{"/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"} {
				if b, err := os.ReadFile(u); err == nil {
					used, _ = strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
					break
				}
			}
			if free := lim - used; avail == 0 || free < avail {
				avail = max(free, 0)
			}
		}
	}
	return avail
}

func meminfo(key string) float64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	return 0
}

// asyncMemory adds what the async runtime holds beyond the sync one
// (docs/async.md): StashBound weight copies, GradBuffers-1 more gradient
// buffers, the copy held at eval and checkpoint steps (weights and both
// moments), and under the Nesterov correction the iterate (held too).
func asyncMemory(est *stages.Memory, cfg config.Config, layout scheduler.Layout, i int) {
	spec := scheduler.Pipeline{Schedule: scheduler.Async, Stages: layout.Stages(), Micro: cfg.Train.MicroBatches, InFlight: cfg.Pipeline.InFlight}
	am, err := scheduler.NewAsyncMachine(spec, i, cfg.Run.Steps)
	if err != nil {
		return // the worker reports it
	}
	w := est.Params
	copies := float64(am.StashBound() + 1)
	opt := 2.0
	if cfg.Train.DelayCorrection == stages.DelayNesterov {
		copies++ // the master iterate
		opt++    // and its held copy
	}
	if snapshots(cfg) && cfg.Faults.SnapshotEvery < cfg.Run.Steps {
		// The held copy at a snapshot also holds the weight versions a
		// restart there runs its first forwards on, and until then the
		// stage keeps those versions past their use (at most as many
		// again); under the correction also the look-ahead.
		d := float64(asyncHistory(am))
		copies += 2 * d
		if cfg.Train.DelayCorrection == stages.DelayNesterov {
			copies++
		}
	}
	est.Params += copies * w
	est.Grads += float64(am.GradBuffers()-1) * est.Grads
	est.AdamW += opt * w
}

// asyncHistory is the most weight versions a restart of stage am's stream
// runs its first forwards on (scheduler.AsyncMachine.HistoryAt).
func asyncHistory(am *scheduler.AsyncMachine) int {
	M := am.Micro()
	return (am.MaxInFlight() - 1 + am.Lag() + M - 1) / M
}

// snapshots reports whether an async run's driver keeps snapshots: at
// its first step, and every faults.snapshot_every steps (SnapshotAt).
func snapshots(cfg config.Config) bool {
	return cfg.Pipeline.Schedule == scheduler.Async && cfg.Pipeline.Stages > 1
}
