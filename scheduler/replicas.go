package scheduler

import "fmt"

// Replicas is how a step runs on a pipeline whose S stages are each held
// by R replicas: which replica computes which micro-batch, whom it sends
// its activations and gradients to, and the fixed order in which a stage's
// replicas sum their weight gradients before the optimizer step.
//
// Routing is round-robin: micro-batch m of the step goes to replica m mod R
// on every stage. So replica r of stage i sends the activation of each of
// its micro-batches to replica r of stage i+1, and the gradient back to
// replica r of stage i-1: the pipeline is R lanes, lane r being the
// replicas r of every stage, and each lane is an ordinary pipeline of its
// share of the micro-batches (its own StageMachines, its own links, its own
// tied-embedding exchange between its first and last stage). It is what
// Membership.Route says for replicas of equal weight, every step the same,
// so a run is reproducible.
//
// Summing is a chain in replica order: replica 0 sends its gradient to
// replica 1, which adds its own after it and passes the partial sum on,
// up to replica R-1, which holds ((g0 + g1) + g2) + … and sends it back
// down the chain, each replica passing it on. Every element is added in
// that one order whatever the stage's parameter layout or the links'
// timing, so every replica of a stage ends with the same bits, and the tied
// embedding's two copies (the first stage's and the last's, each the sum
// of its lanes' own tied sums) stay identical too. Each link carries the
// gradient once each way, in chunks, so the chain's two passes overlap.
type Replicas struct {
	stages, replicas, micro int
}

// NewReplicas is the plan of S stages × R replicas running M micro-batches
// a step. Every replica needs at least one micro-batch (M ≥ R): one with
// none would compute nothing and still hold up the sum.
func NewReplicas(S, R, M int) (Replicas, error) {
	if S < 1 || R < 1 || M < 1 {
		return Replicas{}, fmt.Errorf("replicas: %d stages × %d replicas with %d micro-batches: all must be at least 1: %w", S, R, M, ErrBadShape)
	}
	if M < R {
		return Replicas{}, fmt.Errorf("replicas: %d micro-batches for %d replicas a stage: each replica needs at least one (raise train.micro_batches or lower pipeline.replicas): %w", M, R, ErrBadShape)
	}
	return Replicas{stages: S, replicas: R, micro: M}, nil
}

// Stages, Count and Micro are S, R and M.
func (p Replicas) Stages() int { return p.stages }
func (p Replicas) Count() int  { return p.replicas }
func (p Replicas) Micro() int  { return p.micro }

// Owner is the replica that computes micro-batch m, on every stage.
func (p Replicas) Owner(m int) int { return m % p.replicas }

// Micros lists the step's micro-batches replica r computes, in the order
// its lane runs them: its local micro-batch j is the step's Micros(r)[j].
func (p Replicas) Micros(r int) []int {
	var ms []int
	for m := r; m < p.micro; m += p.replicas {
		ms = append(ms, m)
	}
	return ms
}

// Next is the replica of stage i+1 that replica r of stage i sends its
// activations to, -1 from the last stage; Prev the replica of stage i-1
// it sends gradients to, -1 from the first.
func (p Replicas) Next(i, r int) int {
	if i+1 >= p.stages {
		return -1
	}
	return r
}

func (p Replicas) Prev(i, r int) int {
	if i == 0 {
		return -1
	}
	return r
}

// SumFrom is the replica whose partial sum replica r adds its gradient
// after (-1 for replica 0, which starts the chain), and SumTo the one it
// passes the partial sum to (-1 for the last, which holds the total and
// sends it back down: its result goes to SumFrom, and each replica passes
// the result it receives from SumTo on to SumFrom).
func (p Replicas) SumFrom(r int) int { return r - 1 }

func (p Replicas) SumTo(r int) int {
	if r+1 >= p.replicas {
		return -1
	}
	return r + 1
}

// Worker numbers replica r of stage i among all S·R workers: replica-major
// (r·S + i), so that workers 0..S-1 are the first replicas, in stage order,
// as a pipeline without replicas numbers its stages.
func (p Replicas) Worker(i, r int) int { return r*p.stages + i }

// StageOf and ReplicaOf invert Worker.
func (p Replicas) StageOf(k int) int   { return k % p.stages }
func (p Replicas) ReplicaOf(k int) int { return k / p.stages }
