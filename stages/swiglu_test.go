package stages

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestSwiGLUGrad(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(41, 42))
	N, I := 9, 7
	gu, proj := randVec(r, N*2*I, 2), randVec(r, N*I, 1)
	out := make([]float32, N*I)
	f := func() float64 { swigluForward(&x, out, gu, N, I); return dot64(out, proj) }
	f()
	dgu := make([]float32, N*2*I)
	swigluBackward(&x, dgu, proj, gu, N, I)
	checkGrad(t, "dgu", gu, dgu, f)
}

// SiLU against float64 math, including where e^−g overflows float32.
func TestSwiGLUValues(t *testing.T) {
	g := []float32{-100, -88.5, -20, -1, -1e-3, 0, 1e-3, 0.5, 3, 20, 90}
	u := make([]float32, len(g))
	for i := range u {
		u[i] = 1.5
	}
	out := make([]float32, len(g))
	swigluRowForward(out, g, u)
	for i, v := range g {
		want := float64(v) / (1 + math.Exp(-float64(v))) * 1.5
		if d := math.Abs(float64(out[i]) - want); d > 1e-6*math.Max(1, math.Abs(want)) || math.IsNaN(float64(out[i])) {
			t.Errorf("silu(%v)·1.5 = %v, want %v", v, out[i], want)
		}
	}
}

// The vector SwiGLU agrees with the portable rows on widths that leave
// every tail, for gate values from −100 to 100 (past the exponential's
// clamps), forward and backward.
func TestSwiGLUMatchesRef(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(43, 44))
	for _, I := range []int{1, 7, 8, 12, 33, 688} {
		N := 5
		gu, dout := randVec(r, N*2*I, 4), randVec(r, N*I, 1)
		for i := 0; i < len(gu); i += 5 {
			gu[i] = float32(r.Float64()*200 - 100)
		}
		out, dgu := make([]float32, N*I), make([]float32, N*2*I)
		swigluForward(&x, out, gu, N, I)
		swigluBackward(&x, dgu, dout, gu, N, I)
		outRef, dguRef := make([]float32, N*I), make([]float32, N*2*I)
		for n := 0; n < N; n++ {
			g, u := gu[2*n*I:2*n*I+I], gu[2*n*I+I:2*n*I+2*I]
			swigluRowForward(outRef[n*I:n*I+I], g, u)
			swigluRowBackward(dguRef[2*n*I:2*n*I+I], dguRef[2*n*I+I:2*n*I+2*I], dout[n*I:n*I+I], g, u)
		}
		for i := range out {
			if d := math.Abs(float64(out[i] - outRef[i])); d > 2e-6*math.Max(1, math.Abs(float64(outRef[i]))) {
				t.Fatalf("I=%d out[%d] = %v, reference %v", I, i, out[i], outRef[i])
			}
		}
		for i := range dgu {
			if d := math.Abs(float64(dgu[i] - dguRef[i])); d > 2e-6*math.Max(1, math.Abs(float64(dguRef[i]))) {
				t.Fatalf("I=%d dgu[%d] = %v, reference %v (gate %v)", I, i, dgu[i], dguRef[i], gu[i])
			}
		}
	}
}
