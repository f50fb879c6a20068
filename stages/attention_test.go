package stages

import (
	"fmt"
	"math"
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

// The blocked fast attention agrees with the plain loops on awkward shapes:
// T = 1, prime T, T just past a block edge, one head, odd head sizes.
func TestAttentionMatchesRef(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(9, 10))
	for _, sh := range []struct{ B, T, C, NH int }{
		{1, 1, 4, 1}, {2, 7, 12, 3}, {1, 33, 6, 2}, {3, 31, 15, 5}, {1, 65, 8, 1}, {2, 128, 32, 4},
	} {
		B, T, C, NH := sh.B, sh.T, sh.C, sh.NH
		qkv, dout := randVec(r, B*T*3*C, 1), randVec(r, B*T*C, 1)
		out, att := make([]float32, B*T*C), make([]float32, B*NH*T*T)
		outRef, attRef := make([]float32, B*T*C), make([]float32, B*NH*T*T)
		for i := range att {
			att[i] = 5 // stale values above the diagonal must be cleared
		}
		attentionForward(&x, out, att, qkv, B, T, C, NH)
		attentionForwardRef(outRef, attRef, qkv, B, T, C, NH)
		dqkv, dqkvRef := make([]float32, B*T*3*C), make([]float32, B*T*3*C)
		for i := range dqkv {
			dqkv[i] = 7 // must be overwritten
		}
		attentionBackward(&x, dqkv, dout, qkv, att, make([]float32, poolSize()*2*T*T), B, T, C, NH)
		attentionBackwardRef(dqkvRef, dout, qkv, att, B, T, C, NH)
		name := func(s string) string { return fmt.Sprintf("B=%d T=%d C=%d NH=%d %s", B, T, C, NH, s) }
		assertClose(t, name("out"), out, outRef, 1e-5)
		assertClose(t, name("att"), att, attRef, 1e-5)
		assertClose(t, name("dqkv"), dqkv, dqkvRef, 1e-5)
	}
}

// assertClose fails when some |got − want| exceeds tol·max|want| (float32
// products of different summation order agree to that scale).
func assertClose(t *testing.T, name string, got, want []float32, tol float64) {
	t.Helper()
	var scale float64
	for _, w := range want {
		scale = math.Max(scale, math.Abs(float64(w)))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - float64(want[i])); !(d <= tol*math.Max(scale, 1e-30)) {
			t.Errorf("%s[%d] = %v, reference %v (max |ref| %g)", name, i, got[i], want[i], scale)
			return
		}
	}
}

// BenchmarkAttention is forward+backward of one layer's attention at the
// reference shape (B=16, T=128, C=256, NH=4).
func BenchmarkAttention(b *testing.B) {
	var x exec
	r := rand.New(rand.NewPCG(1, 2))
	B, T, C, NH := 16, 128, 256, 4
	qkv, dout := randVec(r, B*T*3*C, 1), randVec(r, B*T*C, 1)
	out, att, dqkv := make([]float32, B*T*C), make([]float32, B*NH*T*T), make([]float32, B*T*3*C)
	scratch := make([]float32, poolSize()*2*T*T)
	b.ReportAllocs()
	b.SetBytes(int64(4 * len(qkv)))
	c0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		attentionForward(&x, out, att, qkv, B, T, C, NH)
		attentionBackward(&x, dqkv, dout, qkv, att, scratch, B, T, C, NH)
	}
	// Useful work: the 6 causal products, each ≈ B·NH·T²/2·hs multiply-adds.
	flops := float64(b.N) * 6 * float64(B*NH*T*T/2*(C/NH)) * 2
	b.ReportMetric(flops/(cpuSeconds()-c0)/1e9, "causal-GFLOP/cpu-s")
}
