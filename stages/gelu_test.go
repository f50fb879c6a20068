package stages

import (
	"math"
	"math/rand/v2"
	"testing"
)

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

// The vector GELU (when this CPU has one) agrees with the portable loop on
// lengths that leave every possible tail, including inputs far in the tails,
// at zero and NaN.
func TestGeluVecMatchesRef(t *testing.T) {
	if !haveVec {
		t.Skip("no vector GELU on this CPU or build")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 63, 1001} {
		inp, dout := randVec(r, n, 3), randVec(r, n, 1)
		inp[0] = 0
		if n > 3 {
			inp[1], inp[2], inp[3] = 40, -40, float32(math.NaN())
		}
		got, want := make([]float32, n), make([]float32, n)
		k := geluForwardVec(got, inp)
		geluForwardRef(got[k:], inp[k:])
		geluForwardRef(want, inp)
		dgot, dwant := make([]float32, n), make([]float32, n)
		k = geluBackwardVec(dgot, inp, want, dout)
		geluBackwardRef(dgot[k:], inp[k:], want[k:], dout[k:])
		geluBackwardRef(dwant, inp, want, dout)
		for i := range inp {
			// The assembly repeats the Go loop's operations in order and
			// is bit-identical to it on GOAMD64 v1/v2; with v3 the Go
			// compiler fuses multiply-adds, which moves tanh by ~2 ulps
			// (times v/2 in the output).
			tol := 1e-6 + 2e-7*math.Abs(float64(inp[i]))
			if !close32(got[i], want[i], tol) || !close32(dgot[i], dwant[i], 1e-6) {
				t.Errorf("n=%d GELU(%v): vector %v, %v; reference %v, %v", n, inp[i], got[i], dgot[i], want[i], dwant[i])
			}
		}
	}
}

// close32 says a and b agree to tol relative to max(1, |b|), or are both NaN.
func close32(a, b float32, tol float64) bool {
	if math.IsNaN(float64(a)) || math.IsNaN(float64(b)) {
		return math.IsNaN(float64(a)) && math.IsNaN(float64(b))
	}
	return math.Abs(float64(a)-float64(b)) <= tol*math.Max(1, math.Abs(float64(b)))
}
