package stages

import (
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
