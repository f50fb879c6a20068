package compression

import (
	"math"
	"testing"
)

// The fast products (through kernels.Sgemm) agree with the references.
func TestProductsMatchReference(t *testing.T) {
	for _, s := range []struct{ n, m, r int }{{1, 1, 1}, {7, 13, 3}, {64, 100, 16}, {300, 257, 33}} {
		a := gaussian(1, s.n*s.m, 1)
		b := gaussian(2, s.m*s.r, 1)
		bt := gaussian(3, s.n*s.r, 1)
		check := func(name string, got, want []float32) {
			t.Helper()
			if e := relErr(got, want); e > 1e-5 || math.IsNaN(e) {
				t.Errorf("%s %d×%d×%d: relative difference %g", name, s.n, s.m, s.r, e)
			}
		}
		c1, c2 := make([]float32, s.n*s.r), make([]float32, s.n*s.r)
		mulAB(c1, a, b, s.n, s.m, s.r)
		mulABRef(c2, a, b, s.n, s.m, s.r)
		check("mulAB", c1, c2)
		d1, d2 := make([]float32, s.m*s.r), make([]float32, s.m*s.r)
		mulAtB(d1, a, bt, s.n, s.m, s.r)
		mulAtBRef(d2, a, bt, s.n, s.m, s.r)
		check("mulAtB", d1, d2)
		e1, e2 := make([]float32, s.n*s.m), make([]float32, s.n*s.m)
		mulABt(e1, bt, b, s.n, s.m, s.r) // (n×r)·(m×r)ᵀ
		mulABtRef(e2, bt, b, s.n, s.m, s.r)
		check("mulABt", e1, e2)
	}
}
