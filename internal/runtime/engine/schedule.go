package engine

import (
	"math"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/scheduler"
)

// LearningRate is nanoGPT's schedule: linear warm-up from 0 over warmup
// steps, then cosine decay to minLR at the last step. step is 0-based. It
// lives here rather than in the trainer because the async pipeline's
// driver sends each step's rate ahead of the step (stages run several
// steps apart).
func LearningRate(step, warmup, total int, lr, minLR float64) float64 {
	if step < warmup {
		return lr * float64(step+1) / float64(warmup+1)
	}
	if total <= warmup {
		return lr
	}
	ratio := float64(step-warmup) / float64(total-warmup)
	if ratio > 1 {
		ratio = 1
	}
	coeff := 0.5 * (1 + math.Cos(math.Pi*ratio))
	return minLR + coeff*(lr-minLR)
}

// StepLR is LearningRate with c's train keys.
func StepLR(c config.Config, step int) float64 {
	t := c.Train
	return LearningRate(step, t.WarmupSteps, c.Run.Steps, t.LearningRate, t.MinLR)
}

// KeepsState reports whether the run evaluates or checkpoints after done
// steps (1-based) by its schedule: every train.eval_interval and
// train.checkpoint_interval steps, and at the end. The async pipeline keeps
// a copy of every stage at those steps only, taken as each stage applies
// the step (its stages are several steps apart when the trainer asks).
func KeepsState(c config.Config, done int) bool {
	t := c.Train
	return done == c.Run.Steps || (t.EvalInterval > 0 && done%t.EvalInterval == 0) ||
		(t.CheckpointInterval > 0 && done%t.CheckpointInterval == 0) || SnapshotAt(c, done)
}

// SnapshotAt reports whether an async pipeline's driver snapshots every
// stage before step done (0-based: after done steps), to roll back to
// after a failure: every faults.snapshot_every steps, as the membership
// machine asks (scheduler.MembershipConfig.Async; the run's first step is
// the other snapshot, taken before anything ran). The stages need to know
// in advance: a snapshot there also holds the older weight versions a
// restart at done runs its first forwards on (scheduler.NewAsyncMachineAt).
func SnapshotAt(c config.Config, done int) bool {
	return c.Pipeline.Schedule == scheduler.Async && done > 0 && done < c.Run.Steps &&
		c.Faults.SnapshotEvery > 0 && done%c.Faults.SnapshotEvery == 0
}
