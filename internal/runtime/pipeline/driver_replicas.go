package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// The driver's side of stages held by several replicas (docs/swarm.md):
// it has a control link to every replica, numbered as scheduler.Replicas
// numbers workers (the first replicas first, in stage order, so workers
// 0..S-1 are what a pipeline without replicas calls its stages); it sends
// each replica its lane's micro-batches, takes the global gradient norm
// from the first replicas (the sum makes the others' the same, which it
// checks), and checks at every state gathering that the replicas of each
// stage hold the same bits.

// replicaPlan is the run's plan of replicas, nil with one replica a stage.
func replicaPlan(cfg config.Config, layout scheduler.Layout) (*scheduler.Replicas, error) {
	R := cfg.Pipeline.ReplicaCount()
	if R == 1 {
		return nil, nil
	}
	p, err := scheduler.NewReplicas(layout.Stages(), R, cfg.Train.MicroBatches)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// laneConfig is the config a replica's worker is built with: its lane's
// share of the step's micro-batches, each of the run's micro-batch size.
func laneConfig(cfg config.Config, plan *scheduler.Replicas, r int) config.Config {
	B := cfg.Train.BatchSize / cfg.Train.MicroBatches
	n := len(plan.Micros(r))
	cfg.Train.MicroBatches, cfg.Train.BatchSize = n, n*B
	return cfg
}

// firstReplicas are the workers that stand for their stages where one
// copy is enough (evaluation, state): nil (all) without replicas.
func (p *Driver) firstReplicas() []int {
	if p.reps == nil {
		return nil
	}
	out := make([]int, p.layout.Stages())
	for i := range out {
		out[i] = i
	}
	return out
}

// errReplicaFailure ends a run with replicas when a replica or one of its
// links fails: dropping a replica and redoing its micro-batches elsewhere
// is the next part of docs/swarm.md, not done yet.
var errReplicaFailure = errors.New("pipeline: a failure with pipeline.replicas > 1 is not recovered yet (docs/swarm.md); run with one replica a stage to survive it")

// replicaBlob is the bytes of replica r's micro-batches of a step: its
// tokens, then its targets, in its lane's order (batchBlob's layout for
// the lane's share).
func (p *Driver) replicaBlob(step, r int) []byte {
	M := p.cfg.Train.MicroBatches
	B, T := p.cfg.Train.BatchSize/M, p.cfg.Model.BlockSize
	N := B * T
	w := idWidth(p.cfg.Model.VocabSize)
	ms := p.reps.Micros(r)
	blob := make([]byte, 2*len(ms)*N*w)
	for j, m := range ms {
		data.Batch(p.corpus.Train, uint64(p.cfg.Run.Seed), step, m, B, T, p.x, p.y)
		putIDs(blob[j*N*w:], p.x[:N], w)
		putIDs(blob[(len(ms)*N+j*N)*w:], p.y[:N], w)
	}
	return blob
}

// tryStepReplicas is tryStep for stages with replicas.
func (p *Driver) tryStepReplicas(ctx context.Context, step int, lr float64) (engine.StepResult, bool, error) {
	S, R := p.reps.Stages(), p.reps.Count()
	for r := 0; r < R; r++ {
		blob := p.replicaBlob(step, r)
		for i := 0; i < S; i++ {
			m := ctrlMsg{Kind: ctrlStep, Step: step, LR: lr, T0: p.t0.UnixNano()}
			if i == 0 || i == S-1 {
				m.blob = blob
			}
			if err := p.send(ctx, p.reps.Worker(i, r), m); err != nil {
				return engine.StepResult{}, false, err
			}
		}
	}
	reps, err := p.collect(ctx, ctrlReport)
	if err != nil {
		return engine.StepResult{}, false, err
	}
	var sumsq, loss float64
	for i := 0; i < S; i++ {
		first := reps[p.reps.Worker(i, 0)].SumSq
		for r := 1; r < R; r++ {
			// Summed gradients are the same bits on every replica, and so
			// is their sum of squares (added in the same order).
			if got := reps[p.reps.Worker(i, r)].SumSq; math.Float64bits(got) != math.Float64bits(first) {
				return engine.StepResult{}, false, fmt.Errorf("stage %d's replicas disagree on their summed gradient (sum of squares %v on replica 0, %v on replica %d): the gradient sum is broken (a bug: please report it)", i, first, got, r)
			}
		}
		sumsq += first
	}
	// Each last replica's loss is its micro-batches' sum over the whole
	// step's count: their sum, in replica order, is the step's mean.
	for r := 0; r < R; r++ {
		loss += reps[p.reps.Worker(S-1, r)].Loss
	}
	scale := stages.ClipScale(sumsq, p.cfg.Train.GradClip)
	for k := range p.ctrl {
		if err := p.send(ctx, k, ctrlMsg{Kind: ctrlApply, Step: step, Scale: scale}); err != nil {
			return engine.StepResult{}, true, err
		}
	}
	dones, err := p.collect(ctx, ctrlDone)
	if err != nil {
		return engine.StepResult{}, true, err
	}
	var res engine.StepResult
	for r := 0; r < R; r++ {
		lane := dones[p.reps.Worker(0, r):p.reps.Worker(0, r+1)]
		lr, err := p.laneResult(step, loss, sumsq, lane, p.holders[p.reps.Worker(0, r):p.reps.Worker(0, r+1)])
		if err != nil {
			return engine.StepResult{}, true, err
		}
		if r == 0 {
			res = lr
		} else {
			res.Add(lr)
			res.Stages = append(res.Stages, lr.Stages...)
			res.Spans = append(res.Spans, lr.Spans...)
			res.Events = append(res.Events, lr.Events...)
			// One record per stage boundary, over every lane.
			for j := range res.Links {
				a, b := &res.Links[j], lr.Links[j]
				raw := a.Ratio*float64(a.BytesForward+a.BytesBackward) + b.Ratio*float64(b.BytesForward+b.BytesBackward)
				a.BytesForward += b.BytesForward
				a.BytesBackward += b.BytesBackward
				a.Messages += b.Messages
				if wire := a.BytesForward + a.BytesBackward; wire > 0 {
					a.Ratio = raw / float64(wire)
				}
			}
		}
	}
	for _, d := range dones {
		res.WireReplicas += d.Stats.SentReplicaBytes
		res.RawReplicas += d.Stats.RawReplicaBytes
	}
	return res, true, nil
}

// checkReplicaStates asks every further replica of stage i for the digest
// of its state and compares it with the first replica's (got): replicas
// apply the same step to the same weights, so any difference is a bug,
// and a run that went on would average models that are no longer one.
func (p *Driver) checkReplicaStates(ctx context.Context, i int, req ctrlMsg, got ctrlMsg) error {
	if p.reps == nil {
		return nil
	}
	var from []int
	for r := 1; r < p.reps.Count(); r++ {
		k := p.reps.Worker(i, r)
		m := req
		m.HashOnly = true
		if err := p.send(ctx, k, m); err != nil {
			return err
		}
		from = append(from, k)
	}
	others, err := p.collectFrom(ctx, ctrlStateIs, from)
	if err != nil {
		return err
	}
	for _, k := range from {
		o := others[k]
		if o.Hash != got.Hash || o.OptimStep != got.OptimStep {
			return fmt.Errorf("stage %d: replica %d holds a different state than replica 0 (digest %016x at optimizer step %d vs %016x at %d): the replicas drifted apart (a bug: please report it)",
				i, p.reps.ReplicaOf(k), o.Hash, o.OptimStep, got.Hash, got.OptimStep)
		}
	}
	return nil
}

// replicaHolders splits the placement's holders (every worker, numbered
// by plan) into what the membership machine takes: each stage's first
// replica, and its further ones. The machine then counts every replica's
// silence; what it would do about a dead one the driver does not carry out
// yet (errReplicaFailure).
func replicaHolders(plan *scheduler.Replicas, holders []string) ([]string, [][]string) {
	if plan == nil {
		return holders, nil
	}
	S := plan.Stages()
	more := make([][]string, S)
	for k := S; k < len(holders); k++ {
		more[plan.StageOf(k)] = append(more[plan.StageOf(k)], holders[k])
	}
	return slices.Clone(holders[:S]), more
}
