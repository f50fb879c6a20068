package stages

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestMatmulGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	N, C, OC := 5, 4, 3
	inp, w, b := randVec(r, N*C, 1), randVec(r, OC*C, 1), randVec(r, OC, 1)
	proj, base := randVec(r, N*OC, 1), randVec(r, N*OC, 1)
	for _, acc := range []bool{false, true} {
		out := make([]float32, N*OC)
		var res, bias []float32 // both nil, or both set
		if acc {
			res, bias = base, b
		}
		f := func() float64 {
			matmulForward(out, inp, w, bias, res, N, C, OC)
			return dot64(out, proj)
		}
		din, dw, db := make([]float32, N*C), make([]float32, OC*C), make([]float32, OC)
		for i := range din {
			din[i] = 7 // overwritten, or added to when accumulating
		}
		matmulBackward(din, dw, db, proj, inp, w, N, C, OC, acc)
		if acc {
			for i := range din {
				din[i] -= 7
			}
		}
		checkGrad(t, "dinp", inp, din, f)
		checkGrad(t, "dweight", w, dw, f)
		if acc {
			checkGrad(t, "dbias", b, db, f)
		}
	}
	// The residual is added as it is.
	out := make([]float32, N*OC)
	matmulForward(out, inp, w, nil, nil, N, C, OC)
	withRes := make([]float32, N*OC)
	matmulForward(withRes, inp, w, nil, base, N, C, OC)
	for i := range out {
		if withRes[i] != out[i]+base[i] {
			t.Fatalf("residual add: %v, want %v", withRes[i], out[i]+base[i])
		}
	}
}

func TestLayernormGrad(t *testing.T) {
	var wg exec
	r := rand.New(rand.NewPCG(3, 4))
	N, C := 40, 7 // N > the parallel grain, so the row split is exercised
	inp, w, b := randVec(r, N*C, 1), randVec(r, C, 1), randVec(r, C, 1)
	proj := randVec(r, N*C, 1)
	for _, withBias := range []bool{true, false} {
		bias := b
		if !withBias {
			bias = nil
		}
		out, mean, rstd := make([]float32, N*C), make([]float32, N), make([]float32, N)
		f := func() float64 {
			layernormForward(&wg, out, mean, rstd, inp, w, bias, N, C)
			return dot64(out, proj)
		}
		f()
		din, dw, db := make([]float32, N*C), make([]float32, C), make([]float32, C)
		if !withBias {
			db = nil
		}
		layernormBackward(&wg, din, dw, db, proj, inp, w, mean, rstd, N, C)
		checkGrad(t, "dinp", inp, din, f)
		checkGrad(t, "dweight", w, dw, f)
		if withBias {
			checkGrad(t, "dbias", b, db, f)
		}
	}
}

func TestGeluGrad(t *testing.T) {
	var wg exec
	r := rand.New(rand.NewPCG(5, 6))
	n := 9000 // above the parallel grain
	inp, proj := randVec(r, n, 2), randVec(r, n, 1)
	out := make([]float32, n)
	f := func() float64 { geluForward(&wg, out, inp, n); return dot64(out, proj) }
	din := make([]float32, n)
	f()
	geluBackward(&wg, din, inp, out, proj, n)
	checkGrad(t, "dinp", inp[:300], din[:300], f)
	// Known values of the tanh approximation: GELU(1) = 0.841192, GELU(-1) = -0.158808.
	o := make([]float32, 2)
	geluForward(&wg, o, []float32{1, -1}, 2)
	if d := o[0] - 0.841192; d > 1e-5 || d < -1e-5 {
		t.Errorf("GELU(1) = %v, want 0.841192", o[0])
	}
	if d := o[1] + 0.158808; d > 1e-5 || d < -1e-5 {
		t.Errorf("GELU(-1) = %v, want -0.158808", o[1])
	}
}

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

func TestEncoderGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	B, T, C, V := 2, 3, 4, 5
	wte, wpe := randVec(r, V*C, 1), randVec(r, T*C, 1)
	tokens := []int32{1, 4, 1, 0, 1, 3} // repeated tokens accumulate
	proj := randVec(r, B*T*C, 1)
	out := make([]float32, B*T*C)
	f := func() float64 { encoderForward(out, tokens, wte, wpe, B, T, C); return dot64(out, proj) }
	dwte, dwpe := make([]float32, V*C), make([]float32, T*C)
	encoderBackward(dwte, dwpe, proj, tokens, B, T, C)
	checkGrad(t, "dwte", wte, dwte, f)
	checkGrad(t, "dwpe", wpe, dwpe, f)
}

// The GELU derivative recovered from the forward output must match the
// float64 formula everywhere, including near 0 and far in the tails.
func TestGeluDerivativeRange(t *testing.T) {
	var x exec
	var in []float32
	for v := -30.0; v <= 30; v += 0.0137 {
		in = append(in, float32(v))
	}
	in = append(in, 0, 1e-30, -1e-30, 1e-8, -1e-8)
	n := len(in)
	out, din, ones := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range ones {
		ones[i] = 1
	}
	geluForward(&x, out, in, n)
	geluBackward(&x, din, in, out, ones, n)
	for i, v32 := range in {
		v := float64(v32)
		u := math.Sqrt(2/math.Pi) * (v + 0.044715*v*v*v)
		th := math.Tanh(u)
		want := 0.5*(1+th) + 0.5*v*(1-th*th)*math.Sqrt(2/math.Pi)*(1+3*0.044715*v*v)
		// float32 tanh near ±1 is good to ~5e-7 absolute, and the
		// derivative multiplies 1 − tanh² by 0.4·v·(1 + 0.134·v²).
		tol := 2e-6 + 5e-7*0.4*math.Abs(v)*(1+0.134*v*v)
		if math.Abs(float64(din[i])-want) > tol {
			t.Errorf("GELU'(%g) = %v, want %v", v, din[i], want)
		}
	}
}
