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
