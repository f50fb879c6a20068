package stages

import (
	"math/rand/v2"
	"testing"
)

func TestCrossEntropyGrad(t *testing.T) {
	var wg exec
	r := rand.New(rand.NewPCG(9, 10))
	N, V := 20, 7
	logits := randVec(r, N*V, 2)
	targets := make([]int32, N)
	for i := range targets {
		targets[i] = int32(r.IntN(V))
	}
	probs, losses := make([]float32, N*V), make([]float32, N)
	f := func() float64 {
		copy(probs, logits)
		crossEntropyForward(&wg, losses, probs, targets, N, V)
		var s float64
		for _, l := range losses {
			s += float64(l)
		}
		return s / float64(N)
	}
	f()
	crossEntropyBackward(&wg, probs, targets, 1, N, V)
	dlogits := append([]float32(nil), probs...)
	checkGrad(t, "dlogits", logits, dlogits, f)

	// A confident mistake must give a large finite loss, not +Inf.
	big := []float32{0, 200}
	crossEntropyForward(&wg, losses[:1], big, []int32{0}, 1, 2)
	if l := losses[0]; l < 199 || l > 201 {
		t.Errorf("loss of logit gap 200 = %v, want 200", l)
	}
}
