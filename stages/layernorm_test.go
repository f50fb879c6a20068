package stages

import (
	"math/rand/v2"
	"testing"
)

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
