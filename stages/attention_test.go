package stages

import (
	"math/rand/v2"
	"testing"
)

func TestAttentionGrad(t *testing.T) {
	var wg exec
	r := rand.New(rand.NewPCG(7, 8))
	B, T, C, NH := 2, 5, 6, 3
	qkv, proj := randVec(r, B*T*3*C, 1), randVec(r, B*T*C, 1)
	out, att := make([]float32, B*T*C), make([]float32, B*NH*T*T)
	f := func() float64 { attentionForward(&wg, out, att, qkv, B, T, C, NH); return dot64(out, proj) }
	f()
	// Causality: probabilities above the diagonal are exactly zero and every
	// row sums to 1.
	for bh := 0; bh < B*NH; bh++ {
		for i := 0; i < T; i++ {
			var s float32
			for j := 0; j < T; j++ {
				p := att[bh*T*T+i*T+j]
				if j > i && p != 0 {
					t.Fatalf("head %d row %d attends to future position %d (p=%v)", bh, i, j, p)
				}
				s += p
			}
			if s < 0.9999 || s > 1.0001 {
				t.Fatalf("head %d row %d sums to %v", bh, i, s)
			}
		}
	}
	dqkv := make([]float32, B*T*3*C)
	for i := range dqkv {
		dqkv[i] = 7 // must be overwritten
	}
	scratch := make([]float32, poolSize()*2*T*T)
	attentionBackward(&wg, dqkv, proj, qkv, att, scratch, B, T, C, NH)
	checkGrad(t, "dqkv", qkv, dqkv, f)
}
