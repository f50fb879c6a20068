package stages

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestRMSNormGrad(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(21, 22))
	N, C := 40, 12 // N past the parallel grain; C leaves a vector tail
	inp, w, proj := randVec(r, N*C, 1), randVec(r, C, 1), randVec(r, N*C, 1)
	out, rstd := make([]float32, N*C), make([]float32, N)
	f := func() float64 {
		rmsnormForward(&x, out, rstd, inp, w, N, C, 1e-5)
		return dot64(out, proj)
	}
	f()
	din, dw := randVec(r, N*C, 1), make([]float32, C)
	din0 := append([]float32(nil), din...)
	rmsnormBackward(&x, din, dw, proj, inp, w, rstd, N, C)
	for i := range din {
		din[i] -= din0[i] // backward adds: what it added is the gradient
	}
	checkGrad(t, "dinp", inp, din, f)
	checkGrad(t, "dweight", w, dw, f)
}

// The vector RMSNorm rows agree with the portable ones for widths that
// leave every kind of tail, forward and backward, and the weight-gradient
// job cut at an odd column gives the same sums.
func TestRMSNormMatchesRef(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(23, 24))
	for _, C := range []int{1, 7, 8, 12, 33, 256} {
		N := 5
		inp, w, dout := randVec(r, N*C, 2), randVec(r, C, 1), randVec(r, N*C, 1)
		out, rstd := make([]float32, N*C), make([]float32, N)
		rmsnormForward(&x, out, rstd, inp, w, N, C, 1e-6)
		din := randVec(r, N*C, 1)
		dinRef := append([]float32(nil), din...)
		dw, dwRef, dw2 := make([]float32, C), make([]float32, C), make([]float32, C)
		rmsnormBackward(&x, din, dw, dout, inp, w, rstd, N, C)
		job := rmsJob{rstd: rstd, inp: inp, weight: w, dweight: dw2, dout: dout, N: N, C: C, backward: true, params: true}
		job.run(0, 0, min(3, C))
		job.run(0, min(3, C), C)
		for n := 0; n < N; n++ {
			o := make([]float32, C)
			s := rmsRowForwardRef(o, inp[n*C:n*C+C], w, 1e-6)
			name := fmt.Sprintf("C=%d row %d", C, n)
			assertClose(t, name+" out", out[n*C:n*C+C], o, 1e-5)
			assertClose(t, name+" rstd", rstd[n:n+1], []float32{s}, 1e-5)
			rmsRowBackwardRef(dinRef[n*C:n*C+C], inp[n*C:n*C+C], dout[n*C:n*C+C], w, rstd[n])
			for i := 0; i < C; i++ {
				dwRef[i] += inp[n*C+i] * rstd[n] * dout[n*C+i]
			}
		}
		assertClose(t, fmt.Sprintf("C=%d dinp", C), din, dinRef, 1e-5)
		assertClose(t, fmt.Sprintf("C=%d dweight", C), dw, dwRef, 1e-5)
		assertClose(t, fmt.Sprintf("C=%d dweight split", C), dw2, dwRef, 1e-5)
	}
}
