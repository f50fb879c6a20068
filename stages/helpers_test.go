package stages

import (
	"math"
	"math/rand/v2"
	"testing"
)

// randVec returns n normal(0, std) values from a fixed stream.
func randVec(r *rand.Rand, n int, std float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * std)
	}
	return v
}

// dot64 is Σ a·w in float64: the scalar objective whose gradient wrt a
// layer's output is w, used to check each layer's backward.
func dot64(a, w []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(w[i])
	}
	return s
}

// Layer gradient checks run in float32 (the layers are float32) with
// central differences of step layerEps and the objective summed in float64.
// Rounding of the forward (~1e-7 relative per output) divided by the step
// and the O(eps²) truncation error both stay below ~1e-4 on these shapes,
// so an analytic gradient g passes when |g − fd| ≤ layerAtol + layerRtol·|fd|.
const (
	layerEps  = 1e-2
	layerAtol = 2e-3
	layerRtol = 1e-2
)

// checkGrad compares analytic[i] with the central difference of f wrt x[i]
// for every i (or every stride-th i, for big tensors).
func checkGrad(t *testing.T, name string, x, analytic []float32, f func() float64) {
	t.Helper()
	if len(x) != len(analytic) {
		t.Fatalf("%s: %d values but %d gradients", name, len(x), len(analytic))
	}
	bad := 0
	for i := range x {
		orig := x[i]
		x[i] = orig + layerEps
		fp := f()
		x[i] = orig - layerEps
		fm := f()
		x[i] = orig
		fd := (fp - fm) / (2 * layerEps)
		a := float64(analytic[i])
		if math.Abs(a-fd) > layerAtol+layerRtol*math.Abs(fd) || math.IsNaN(a) {
			if bad < 5 {
				t.Errorf("%s[%d]: analytic %.6g, finite difference %.6g", name, i, a, fd)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d gradient entries off", name, bad, len(x))
	}
}
