package stages

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The vector softmax agrees with the portable loop on every length from 1
// to 40 (all tails), with a huge spread of values (entries that underflow
// to 0) and with a NaN, which must spread to the whole row as it does in Go.
func TestSoftmaxMatchesRef(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for n := 1; n <= 40; n++ {
		for _, spread := range []float64{1, 30, 200} {
			x := randVec(r, n, spread)
			got, want := append([]float32(nil), x...), append([]float32(nil), x...)
			softmaxInPlace(got)
			softmaxRef(want)
			for i := range want {
				if d := math.Abs(float64(got[i]) - float64(want[i])); d > 1e-6*float64(want[i])+1e-37 || math.IsNaN(d) {
					t.Fatalf("n=%d spread=%g: softmax[%d] = %v, reference %v", n, spread, i, got[i], want[i])
				}
			}
		}
		x := randVec(r, n, 1)
		x[n/2] = float32(math.NaN())
		softmaxInPlace(x)
		for i, v := range x {
			if !math.IsNaN(float64(v)) {
				t.Fatalf("n=%d: a NaN input left softmax[%d] = %v", n, i, v)
			}
		}
	}
}
