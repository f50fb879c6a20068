package engine

import (
	"context"
	"fmt"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/stages"
)

// Engine is one way of computing a training step: one process (Local), or a
// pipeline of stages placed in goroutines, processes or WebRTC peers
// (package pipeline).
type Engine interface {
	// Step runs optimizer step step (0-based) at learning rate lr. A
	// *RollbackError means the engine went back to an earlier step (a
	// stage changed hands): the caller resumes from there.
	Step(ctx context.Context, step int, lr float64) (StepResult, error)
	// Eval returns the mean loss per predicted token over windows of
	// token ids (each predicts its last len-1 ids).
	Eval(ctx context.Context, windows [][]int32) (float64, error)
	// State gathers the whole model and its optimizer state.
	State(ctx context.Context) (*stages.State, error)
	// Restore loads a State saved by any engine with the same model config.
	Restore(ctx context.Context, st *stages.State) error
	// Params is the model's parameter count (the tied embedding once).
	Params() int64
	Close() error
}

// StepResult is what one optimizer step reports.
type StepResult struct {
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
	// WireTied is the tied-embedding gradient exchange between the first
	// and last stage, both ways: once per step, not per token.
	WireTied int64
	// WireReplicas is the gradient sum among each stage's replicas, every
	// link and direction: once per step (docs/swarm.md).
	WireReplicas int64
	// RawReplicas is the fp32 bytes the replicas' sum stands for (the
	// same links and directions carrying every gradient value raw).
	RawReplicas         int64
	NetWait, Busy, Idle float64 // seconds summed over stages
	// Faulty are peers evicted for failed spot checks since the last
	// step (docs/trust.md): the ledger records their keys.
	Faulty []metrics.Faulty
}

// Add accumulates r's byte and time counters (not its losses) into t.
func (t *StepResult) Add(r StepResult) {
	t.WireForward += r.WireForward
	t.WireBackward += r.WireBackward
	t.RawForward += r.RawForward
	t.RawBackward += r.RawBackward
	t.WireTied += r.WireTied
	t.WireReplicas += r.WireReplicas
	t.RawReplicas += r.RawReplicas
	t.NetWait += r.NetWait
	t.Busy += r.Busy
	t.Idle += r.Idle
}

// RollbackError tells the run loop that the engine went back to step To
// (0-based: the next step to run is To): the steps after it are redone.
type RollbackError struct{ To int }

func (r *RollbackError) Error() string {
	return fmt.Sprintf("the pipeline rolled back to step %d", r.To)
}

// Observer is told about the run as it happens (the web view). Calls must
// not block: training never waits for an observer.
type Observer interface {
	PublishStep(metrics.StepRecord)
	PublishSpans([]metrics.Span)
	PublishEvent(metrics.Event)
}

// Observers passes every record to each of its observers.
type Observers []Observer

func (m Observers) PublishStep(r metrics.StepRecord) {
	for _, o := range m {
		o.PublishStep(r)
	}
}

func (m Observers) PublishSpans(s []metrics.Span) {
	for _, o := range m {
		o.PublishSpans(s)
	}
}

func (m Observers) PublishEvent(e metrics.Event) {
	for _, o := range m {
		o.PublishEvent(e)
	}
}

// Hooks are how an engine tells the run what happens between its steps:
// a status line, events as they happen (a run waiting for a peer says so
// at once), and who holds which stage. Nil fields are ignored.
type Hooks struct {
	Status func(string)
	Event  func(metrics.Event)
	Peers  func([]metrics.Peer)
}

// Hooked is an engine that reports through Hooks (pipelines do).
type Hooked interface {
	SetHooks(Hooks)
}

// FaultCounter is an engine that counts failures and recoveries; the run
// copies its counters into the summary.
type FaultCounter interface {
	// Faults returns a summary whose fault fields are set.
	Faults() metrics.Summary
}

// Snapshotter is an engine that keeps a copy of the whole model from time
// to time (a WebRTC pipeline's rollback snapshot); when the engine fails,
// the run writes it if it is newer than the latest checkpoint.
type Snapshotter interface {
	// Snapshot is the latest copy, nil if none; its Step says of when.
	Snapshot() *stages.State
}
