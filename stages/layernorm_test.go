package stages

import (
	"fmt"
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

// The vector LayerNorm rows agree with the portable ones for widths that
// leave every kind of tail, with and without bias, forward and backward
// (including the parameter-gradient job cut at an odd column).
func TestLayernormMatchesRef(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(11, 12))
	for _, C := range []int{1, 7, 8, 12, 33, 256} {
		for _, withBias := range []bool{false, true} {
			N := 5
			inp, w, dout := randVec(r, N*C, 2), randVec(r, C, 1), randVec(r, N*C, 1)
			var b []float32
			if withBias {
				b = randVec(r, C, 1)
			}
			out, mean, rstd := make([]float32, N*C), make([]float32, N), make([]float32, N)
			layernormForward(&x, out, mean, rstd, inp, w, b, N, C)
			din := randVec(r, N*C, 1)
			dinRef := append([]float32(nil), din...)
			dw, dwRef := make([]float32, C), make([]float32, C)
			layernormBackward(&x, din, dw, nil, dout, inp, w, mean, rstd, N, C)
			// The parameter job cut at column 3 (an odd split) must match.
			job := lnBwdJob{nil, dw, nil, dout, inp, w, mean, rstd, N, C, true}
			dw2 := make([]float32, C)
			job.dweight = dw2
			job.run(0, 0, min(3, C))
			job.run(0, min(3, C), C)
			for n := 0; n < N; n++ {
				o := make([]float32, C)
				m, s := lnRowForwardRef(o, inp[n*C:n*C+C], w, b)
				name := fmt.Sprintf("C=%d bias=%v row %d", C, withBias, n)
				assertClose(t, name+" out", out[n*C:n*C+C], o, 1e-5)
				assertClose(t, name+" mean/rstd", []float32{mean[n], rstd[n]}, []float32{m, s}, 1e-5)
				lnRowBackwardRef(dinRef[n*C:n*C+C], inp[n*C:n*C+C], dout[n*C:n*C+C], w, mean[n], rstd[n])
				for i := 0; i < C; i++ {
					dwRef[i] += (inp[n*C+i] - mean[n]) * rstd[n] * dout[n*C+i]
				}
			}
			assertClose(t, fmt.Sprintf("C=%d dinp", C), din, dinRef, 1e-5)
			assertClose(t, fmt.Sprintf("C=%d dweight", C), dw, dwRef, 1e-5)
			assertClose(t, fmt.Sprintf("C=%d dweight split", C), dw2, dwRef, 1e-5)
		}
	}
}
