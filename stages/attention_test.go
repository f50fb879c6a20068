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

func TestAttentionGQAGrad(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(51, 52))
	B, T, NH, KVH, hs := 2, 5, 4, 2, 3
	qs := (NH + 2*KVH) * hs
	qkv, proj := randVec(r, B*T*qs, 1), randVec(r, B*T*NH*hs, 1)
	out, att := make([]float32, B*T*NH*hs), make([]float32, B*NH*T*T)
	f := func() float64 { attentionForwardGQA(&x, out, att, qkv, B, T, NH, KVH, hs); return dot64(out, proj) }
	f()
	dqkv := make([]float32, len(qkv))
	for i := range dqkv {
		dqkv[i] = 7 // must be overwritten
	}
	attentionBackwardGQA(&x, dqkv, proj, qkv, att, make([]float32, poolSize()*2*T*T), B, T, NH, KVH, hs)
	checkGrad(t, "dqkv", qkv, dqkv, f)
}

// Grouped-query attention is multi-head attention on key/value heads
// repeated n_head/n_kv_head times (Hugging Face's repeat_kv): compare with
// the plain-loop reference run on the repeated heads, whose key/value
// gradients sum over each group. KVH = NH must be the GPT's attention to
// the bit.
func TestAttentionGQAMatchesRepeatKV(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(53, 54))
	for _, sh := range []struct{ B, T, NH, KVH, hs int }{
		{1, 1, 2, 1, 4}, {2, 7, 4, 2, 3}, {1, 33, 6, 3, 2}, {2, 40, 4, 1, 8}, {1, 65, 3, 3, 4},
	} {
		B, T, NH, KVH, hs := sh.B, sh.T, sh.NH, sh.KVH, sh.hs
		rep, C := NH/KVH, NH*hs
		qs := (NH + 2*KVH) * hs
		qkv, dout := randVec(r, B*T*qs, 1), randVec(r, B*T*C, 1)
		// The same attention in GPT-2's packed layout with repeated kv.
		full := make([]float32, B*T*3*C)
		for n := 0; n < B*T; n++ {
			row, f := qkv[n*qs:], full[n*3*C:]
			copy(f[:C], row[:C])
			for h := 0; h < NH; h++ {
				g := h / rep
				copy(f[C+h*hs:C+h*hs+hs], row[C+g*hs:C+g*hs+hs])
				copy(f[2*C+h*hs:2*C+h*hs+hs], row[C+KVH*hs+g*hs:C+KVH*hs+g*hs+hs])
			}
		}
		out, att := make([]float32, B*T*C), make([]float32, B*NH*T*T)
		outRef, attRef := make([]float32, B*T*C), make([]float32, B*NH*T*T)
		attentionForwardGQA(&x, out, att, qkv, B, T, NH, KVH, hs)
		attentionForwardRef(outRef, attRef, full, B, T, C, NH)
		dqkv, dfull := make([]float32, B*T*qs), make([]float32, B*T*3*C)
		attentionBackwardGQA(&x, dqkv, dout, qkv, att, make([]float32, poolSize()*2*T*T), B, T, NH, KVH, hs)
		attentionBackwardRef(dfull, dout, full, att, B, T, C, NH)
		want := make([]float32, B*T*qs)
		for n := 0; n < B*T; n++ {
			w, f := want[n*qs:], dfull[n*3*C:]
			copy(w[:C], f[:C])
			for h := 0; h < NH; h++ {
				g := h / rep
				for i := 0; i < hs; i++ {
					w[C+g*hs+i] += f[C+h*hs+i]
					w[C+KVH*hs+g*hs+i] += f[2*C+h*hs+i]
				}
			}
		}
		name := func(s string) string { return fmt.Sprintf("B=%d T=%d NH=%d KVH=%d hs=%d %s", B, T, NH, KVH, hs, s) }
		assertClose(t, name("out"), out, outRef, 1e-5)
		assertClose(t, name("att"), att, attRef, 1e-5)
		assertClose(t, name("dqkv"), dqkv, want, 1e-5)
		if KVH == NH {
			// Same layout as GPT-2's: the same bits as attentionForward.
			out2, att2, d2 := make([]float32, B*T*C), make([]float32, B*NH*T*T), make([]float32, B*T*3*C)
			attentionForward(&x, out2, att2, qkv, B, T, C, NH)
			attentionBackward(&x, d2, dout, qkv, att2, make([]float32, poolSize()*2*T*T), B, T, C, NH)
			for i := range out2 {
				if math.Float32bits(out2[i]) != math.Float32bits(out[i]) {
					t.Fatalf("%s: GQA with n_kv_head = n_head differs from attentionForward at %d", name(""), i)
				}
			}
			for i := range d2 {
				if math.Float32bits(d2[i]) != math.Float32bits(dqkv[i]) {
					t.Fatalf("%s: GQA backward with n_kv_head = n_head differs from attentionBackward at %d", name(""), i)
				}
			}
		}
	}
}
