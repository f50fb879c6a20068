package stages

import (
	"math"
)

// crossEntropyForward turns each of the N rows of logits into probabilities
// in place (softmax over V) and writes each row's loss −log p[target] in
// nats into losses. The loss is computed from the logits (log-sum-exp), not
// from the rounded probability, so it stays finite for confident mistakes.
//
//	probs (N, V) in: logits, out: probabilities; losses (N); targets (N)
func crossEntropyForward(x *exec, losses, probs []float32, targets []int32, N, V int) {
	x.ceJob = ceJob{losses: losses, probs: probs, targets: targets, V: V}
	parallelFor(&x.par, N, 8, &x.ceJob)
}

// crossEntropyBackward turns probs into dloss/dlogits in place, for a loss
// that is dloss × the mean over the N rows.
//
//	probs (N, V) in: probabilities, out: gradient wrt logits; targets (N)
func crossEntropyBackward(x *exec, probs []float32, targets []int32, dloss float32, N, V int) {
	x.ceJob = ceJob{probs: probs, targets: targets, V: V, backward: true, scale: dloss / float32(N)}
	parallelFor(&x.par, N, 8, &x.ceJob)
}

type ceJob struct {
	losses, probs []float32
	targets       []int32
	V             int
	backward      bool
	scale         float32
}

func (j *ceJob) run(_, lo, hi int) {
	V := j.V
	for n := lo; n < hi; n++ {
		row := j.probs[n*V : n*V+V]
		tg := int(j.targets[n])
		if j.backward {
			for v := range row {
				row[v] *= j.scale
			}
			row[tg] -= j.scale
			continue
		}
		logit := row[tg]
		maxv, sum := softmaxInPlace(row)
		lt := logit - maxv
		j.losses[n] = float32(math.Log(float64(sum))) - lt
	}
}
