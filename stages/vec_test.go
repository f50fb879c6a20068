package stages

import (
	"fmt"
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

// The vector add, add-two and AdamW helpers plus their Go tails give the
// plain loops' results on every length from 1 to 40.
func TestVecHelpersMatchLoops(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for n := 1; n <= 40; n++ {
		a, b, c := randVec(r, n, 1), randVec(r, n, 1), randVec(r, n, 1)
		got, want := append([]float32(nil), c...), append([]float32(nil), c...)
		k := add2Vec(got, a, b)
		for i := k; i < n; i++ {
			got[i] += a[i] + b[i]
		}
		k = addVec(got, a)
		for i := k; i < n; i++ {
			got[i] += a[i]
		}
		for i := range want {
			want[i] += a[i] + b[i]
			want[i] += a[i]
		}
		assertClose(t, fmt.Sprintf("n=%d add", n), got, want, 1e-6)

		// AdamW: the optimizer's flat loop (vector head + Go tail) against
		// the same update written out here in float64.
		w, g := randVec(r, n, 1), randVec(r, n, 1)
		p := &Param{Name: "p", Shape: []int{n}, Data: append([]float32(nil), w...), Grad: g, Decay: true}
		opt, err := NewAdamW([]*Param{p}, DefaultAdamWConfig())
		if err != nil {
			t.Fatal(err)
		}
		opt.Step(0.01)
		for i := range w {
			m := 0.1 * float64(g[i])
			v := 0.05 * float64(g[i]) * float64(g[i])
			want := float64(w[i])*(1-0.01*0.1) - 0.01/0.1*m/(math.Sqrt(v)/math.Sqrt(0.05)+1e-8)
			if d := math.Abs(float64(p.Data[i]) - want); d > 1e-6 {
				t.Fatalf("n=%d AdamW w[%d] = %v, want %v", n, i, p.Data[i], want)
			}
		}
	}
}
