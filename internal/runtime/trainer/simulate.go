package trainer

import (
	"context"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/scheduler/sim"
	"github.com/narrowband/narrowband/stages"
)

// minAsyncSteps is the fewest steps simulate runs for async: the
// simulator measures its steady state over the middle half, past the
// fill and before the drain (docs/async.md).
const minAsyncSteps = 24

// Prediction is what `narrowband simulate` reports.
type Prediction struct {
	Stages          int           `json:"stages"`
	Micro           int           `json:"micro_batches"`
	Schedule        string        `json:"schedule"`
	InFlight        int           `json:"in_flight,omitempty"` // async: the depth simulated (pipeline.in_flight, or the one InFlightFor chose)
	Steps           int           `json:"steps"`               // simulated
	Compute         []sim.Compute `json:"compute_seconds"`
	ActivationBytes int64         `json:"activation_bytes"`
	GradientBytes   int64         `json:"gradient_bytes"`
	EmbeddingBytes  int64         `json:"embedding_bytes"`
	StepSeconds     float64       `json:"step_seconds"`
	TokensPerSecond float64       `json:"tokens_per_second"`
	Busy            []float64     `json:"busy_fraction"`
	NetworkWait     []float64     `json:"network_wait_fraction"`
	Bubble          float64       `json:"bubble_fraction"`
	Timeline        string        `json:"timeline"`

	// With pipeline.replicas > 1 (docs/swarm.md): the busiest lane's
	// micro-batches, the lanes' step without the gradient sums, the
	// slowest stage's sum over its chain of replicas, each stage's
	// gradient as one chain link carries it each way, and the wire bytes
	// of every sum of a step (the runtime's replica_bytes).
	Replicas             int     `json:"replicas,omitempty"`
	LaneMicro            int     `json:"lane_micro_batches,omitempty"`
	LaneStepSeconds      float64 `json:"lane_step_seconds,omitempty"`
	ReplicaSumSeconds    float64 `json:"replica_sum_seconds,omitempty"`
	ReplicaSumStage      int     `json:"replica_sum_stage,omitempty"` // the slowest
	ReplicaGradientBytes []int64 `json:"replica_gradient_bytes,omitempty"`
	ReplicaBytesPerStep  int64   `json:"replica_bytes_per_step,omitempty"`
	ReplicaMbps          float64 `json:"replica_link_mbps,omitempty"` // 0: unlimited
	ReplicaLatencyMs     float64 `json:"replica_link_latency_ms,omitempty"`
	// ReplicaCodec is the sum's [compression.replicas] codec ("fp32" for
	// none) and ReplicaPasses its sums over the chain a step (PowerSGD 2).
	ReplicaCodec  string `json:"replica_codec,omitempty"`
	ReplicaPasses int    `json:"replica_passes,omitempty"`
}

// spanCollector is an Observer that keeps every span.
type spanCollector struct{ spans []metrics.Span }

func (s *spanCollector) PublishStep(metrics.StepRecord) {}
func (s *spanCollector) PublishEvent(metrics.Event)     {}
func (s *spanCollector) PublishSpans(sp []metrics.Span) { s.spans = append(s.spans, sp...) }

// ComputeFromSpans averages each stage's forward, backward and optimizer
// spans over the steps after the first (which warms up), and over a
// stage's replicas; the gradient sum among replicas and a swarm end's wait
// for the tied gradient are taken out of the optimizer's time (the
// simulator projects both from the links).
func ComputeFromSpans(spans []metrics.Span, stages int) []sim.Compute {
	type acc struct{ f, b, o, nf, nb, no float64 }
	a := make([]acc, stages)
	for _, s := range spans {
		if s.Step <= 1 || s.Stage >= stages {
			continue
		}
		d := s.End - s.Start
		switch s.Kind {
		case "forward":
			a[s.Stage].f += d
			a[s.Stage].nf++
		case "backward":
			a[s.Stage].b += d
			a[s.Stage].nb++
		case "optimizer": // recorded in two parts around the norm barrier
			a[s.Stage].o += d
			a[s.Stage].no += 0.5
		case "replica_sum", "tied_wait": // inside the first part: network time, not compute
			a[s.Stage].o -= d
		}
	}
	out := make([]sim.Compute, stages)
	for i, x := range a {
		out[i] = sim.Compute{Forward: x.f / math.Max(x.nf, 1), Backward: x.b / math.Max(x.nb, 1), Optimizer: x.o / math.Max(x.no, 1)}
	}
	return out
}

// MeasureCompute runs cfg for a few steps on this machine with unshaped
// links and returns each stage's compute times. Every stage and replica
// runs here, sharing this machine's cores as the real in-process run
// does: to project peers of their own, give the times or a speedup.
func MeasureCompute(ctx context.Context, cfg config.Config, steps int) ([]sim.Compute, error) {
	c := cfg
	c.Run.Steps = steps
	// Compute per micro-batch does not depend on the schedule; 1F1B
	// measures it with the fewest activations held.
	if c.Pipeline.Schedule == scheduler.Async {
		c.Pipeline.Schedule, c.Pipeline.InFlight, c.Train.DelayCorrection = scheduler.OneFOneB, 0, stages.DelayNone
	}
	c.Train.EvalInterval = 0
	c.Train.EvalBatches = 1
	c.Train.CheckpointInterval = 0
	c.Network = config.Network{}
	c.Sweep = nil
	dir, err := os.MkdirTemp("", "narrowband-measure-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	col := &spanCollector{}
	if c.Pipeline.Stages == 1 && c.Pipeline.ReplicaCount() == 1 {
		// The single-process engine records no spans; a 1-stage pipeline
		// does the same work through the worker, which does (and so do
		// the replicas of one stage).
		return nil, fmt.Errorf("simulate: give simulate.forward_ms/backward_ms for a 1-stage run (nothing crosses a link)")
	}
	if _, err := Run(ctx, Options{Config: c, Out: dir, Observer: col}); err != nil {
		return nil, fmt.Errorf("simulate: measuring compute: %w", err)
	}
	return ComputeFromSpans(col.spans, c.Pipeline.Stages), nil
}

// Predict simulates cfg with the given per-stage compute times.
func Predict(cfg config.Config, comp []sim.Compute) (Prediction, error) {
	kind := cfg.Pipeline.Schedule
	S, M := cfg.Pipeline.Stages, cfg.Train.MicroBatches
	act, grad, emb, err := pipeline.MessageBytes(cfg)
	if err != nil {
		return Prediction{}, err
	}
	bps := func(mbps float64) float64 {
		if mbps <= 0 {
			return math.Inf(1)
		}
		return mbps * 1e6
	}
	var links []sim.Link
	for i := 0; i+1 < S; i++ {
		p := cfg.LinkProfile(i, i+1)
		links = append(links, sim.Link{ForwardBPS: bps(p.BandwidthMbps), BackwardBPS: bps(p.BandwidthMbps), Latency: p.LatencyMs / 1000, ActivationBytes: act, GradientBytes: grad})
	}
	scaled := make([]sim.Compute, len(comp))
	for i, c := range comp {
		s := cfg.Simulate.Speedup
		scaled[i] = sim.Compute{Forward: c.Forward / s, Backward: c.Backward / s, Optimizer: c.Optimizer / s}
	}
	tied := cfg.LinkProfile(0, 1)
	steps := cfg.Simulate.Steps
	if kind == scheduler.Async {
		// The async stream fills once and never drains between steps; its
		// steady state is measured over the middle half of the run.
		steps = max(steps, minAsyncSteps)
	}
	sc := sim.Config{
		Schedule: kind, Stages: S, Micro: M, Steps: steps, Lookahead: cfg.Pipeline.Lookahead,
		Compute: scaled, Links: links,
		Embedding:     sim.Embedding{BPS: bps(tied.BandwidthMbps), Latency: tied.LatencyMs / 1000, Bytes: emb},
		TokensPerStep: int64(cfg.Train.BatchSize * cfg.Model.BlockSize),
		Spans:         true,
		// The sync runtime synchronises at the optimizer step for the
		// global gradient norm (the coordinator's control links are not
		// shaped); async clips per stage and never synchronises.
		Barrier: kind != scheduler.Async,
	}
	if S == 1 {
		sc.Links = nil
	}
	if kind == scheduler.Async {
		sc.InFlight = cfg.Pipeline.InFlight
		if sc.InFlight == 0 {
			sc.InFlight = sim.InFlightFor(sc) // what the runtime would choose
		}
	}
	p := Prediction{Stages: S, Micro: M, Schedule: kind.String(), InFlight: sc.InFlight, Steps: steps, Compute: scaled, ActivationBytes: act, GradientBytes: grad, EmbeddingBytes: emb}
	var res sim.Result
	if R := cfg.Pipeline.ReplicaCount(); R > 1 {
		if res, err = predictSwarm(cfg, sc, &p); err != nil {
			return Prediction{}, err
		}
	} else if res, err = sim.Run(sc); err != nil {
		return Prediction{}, err
	}
	p.StepSeconds, p.TokensPerSecond = res.StepTime, res.TokensPerSecond
	var busy, all float64
	for _, st := range res.Stages {
		p.Busy = append(p.Busy, st.Busy)
		p.NetworkWait = append(p.NetworkWait, st.NetWait)
		busy += st.Busy
		all++
	}
	if all > 0 {
		p.Bubble = 1 - busy/all
	}
	// One steady-state step: sync's last; async's middle one (its last
	// step drains the stream).
	show := steps - 1
	if kind == scheduler.Async {
		show = steps / 2
	}
	var last []sim.Span
	for _, s := range res.Spans {
		if s.Step == show {
			last = append(last, s)
		}
	}
	if len(last) > 0 {
		sort.Slice(last, func(i, j int) bool { return last[i].Start < last[j].Start })
		t0 := last[0].Start
		for i := range last {
			last[i].Start -= t0
			last[i].End -= t0
		}
		p.Timeline = sim.Timeline(last, S, res.StepTime/100)
	}
	return p, nil
}

// predictSwarm projects cfg's replicas (docs/swarm.md) over the lane sc:
// each stage's gradient sum runs on a chain of links with the run's base
// [network] profile, as pipeline.ShapeReplicaLink shapes them, carrying
// the gradient as the [compression.replicas] codec sends it
// (pipeline.ReplicaSumBytes), in as many passes as it takes
// (pipeline.ReplicaSumPasses: PowerSGD's P, then its Q).
func predictSwarm(cfg config.Config, sc sim.Config, p *Prediction) (sim.Result, error) {
	layout, err := engine.Layout(cfg)
	if err != nil {
		return sim.Result{}, err
	}
	prof := cfg.LinkProfile(-1, -1)
	grad, frame := pipeline.ReplicaSumBytes(cfg, layout)
	sw := sim.Swarm{Lane: sc, Replicas: cfg.Pipeline.ReplicaCount(), GradientBytes: grad, FrameBytes: frame,
		ReplicaBPS: math.Inf(1), ReplicaLatency: prof.LatencyMs / 1000, Passes: pipeline.ReplicaSumPasses(cfg)}
	if prof.BandwidthMbps > 0 {
		sw.ReplicaBPS = prof.BandwidthMbps * 1e6
	}
	r, err := sim.RunSwarm(sw)
	if err != nil {
		return sim.Result{}, fmt.Errorf("simulate: %w", err)
	}
	p.Replicas, p.LaneMicro, p.LaneStepSeconds = sw.Replicas, r.LaneMicro, r.LaneStepTime
	p.ReplicaSumSeconds, p.ReplicaGradientBytes, p.ReplicaBytesPerStep = r.ReplicaSum, sw.GradientBytes, r.ReplicaBytes
	p.ReplicaMbps, p.ReplicaLatencyMs = prof.BandwidthMbps, prof.LatencyMs
	p.ReplicaCodec, p.ReplicaPasses = "fp32", sw.Passes
	if rc := cfg.Compression.Replicas; rc.Method != compression.ReduceNone && rc.Method != compression.ReduceUnknown {
		p.ReplicaCodec = rc.Label()
	}
	for i, d := range r.ReplicaSums {
		if d > r.ReplicaSums[p.ReplicaSumStage] {
			p.ReplicaSumStage = i
		}
	}
	return r.Result, nil
}

// String renders a prediction for the terminal.
func (p Prediction) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d stages, %d micro-batches, %s", p.Stages, p.Micro, p.Schedule)
	if p.InFlight > 0 {
		fmt.Fprintf(&b, ", in_flight %d", p.InFlight)
	}
	fmt.Fprintf(&b, ", %d steps simulated\n", p.Steps)
	fmt.Fprintf(&b, "messages: activation %d B, gradient %d B, tied embedding %d B\n", p.ActivationBytes, p.GradientBytes, p.EmbeddingBytes)
	for i, c := range p.Compute {
		fmt.Fprintf(&b, "stage %d: forward %.2f ms, backward %.2f ms, optimizer %.2f ms per micro-batch/step; busy %.0f%%, network wait %.0f%%\n",
			i, 1e3*c.Forward, 1e3*c.Backward, 1e3*c.Optimizer, 100*p.Busy[i], 100*p.NetworkWait[i])
	}
	if p.Replicas > 1 {
		link := "unlimited"
		if p.ReplicaMbps > 0 {
			link = fmt.Sprintf("%g Mbit/s", p.ReplicaMbps)
		}
		fmt.Fprintf(&b, "replicas: %d a stage, %d micro-batches on the busiest lane; lane step %.3f s without the sums\n", p.Replicas, p.LaneMicro, p.LaneStepSeconds)
		codec := p.ReplicaCodec
		if p.ReplicaPasses > 1 {
			codec += fmt.Sprintf(" in %d passes", p.ReplicaPasses)
		}
		fmt.Fprintf(&b, "gradient sum (chain of %d, %s, %s, %g ms): %.3f s on the slowest stage (stage %d, %.1f MB each way a link); %.1f MB a step of replica traffic\n",
			p.Replicas, codec, link, p.ReplicaLatencyMs, p.ReplicaSumSeconds, p.ReplicaSumStage, float64(p.ReplicaGradientBytes[p.ReplicaSumStage])/1e6, float64(p.ReplicaBytesPerStep)/1e6)
	}
	fmt.Fprintf(&b, "predicted step %.3f s, %.0f tokens/s, bubble %.0f%%\n", p.StepSeconds, p.TokensPerSecond, 100*p.Bubble)
	if p.Timeline != "" {
		legend := "lowercase forward, UPPERCASE backward, # optimizer, ~ network wait, . idle"
		if p.Replicas > 1 {
			legend = "lane 0; lowercase forward, UPPERCASE backward, = gradient sum, # optimizer, ~ network wait, . idle"
		}
		fmt.Fprintf(&b, "one steady-state step (%s):\n%s", legend, p.Timeline)
	}
	return b.String()
}
