package stages

import "math"

// rmsnormForward is Hugging Face's LlamaRMSNorm on each of the N rows of
// inp: out = weight · (x · rstd) with rstd = 1/√(mean(x²) + eps). rstd is
// kept for the backward pass. It is LayerNorm without the mean and the
// bias, so it runs on LayerNorm's vector kernels with the mean fixed at 0.
//
//	out (N, C), rstd (N), inp (N, C), weight (C)
func rmsnormForward(x *exec, out, rstd, inp, weight []float32, N, C int, eps float64) {
	x.rmsJob = rmsJob{out: out, rstd: rstd, inp: inp, weight: weight, C: C, eps: eps}
	parallelFor(&x.par, N, 16, &x.rmsJob)
}

// rmsnormBackward adds the gradients of rmsnormForward into dinp and
// dweight.
//
//	dinp (N, C), dweight (C), dout (N, C), inp (N, C), weight (C), rstd (N)
func rmsnormBackward(x *exec, dinp, dweight, dout, inp, weight, rstd []float32, N, C int) {
	x.rmsJob = rmsJob{out: dinp, rstd: rstd, inp: inp, weight: weight, dweight: dweight, dout: dout, N: N, C: C, backward: true}
	parallelFor(&x.par, N, 16, &x.rmsJob)
	// The weight gradient sums over rows: split by column so every entry
	// is summed over rows in order, whatever the number of cores.
	x.rmsJob.params = true
	parallelFor(&x.par, C, 32, &x.rmsJob)
}

type rmsJob struct {
	out, rstd, inp, weight []float32
	dweight, dout          []float32
	N, C                   int
	eps                    float64
	backward, params       bool
}

func (j *rmsJob) run(_, lo, hi int) {
	C := j.C
	switch {
	case !j.backward:
		w := j.weight[:C]
		for n := lo; n < hi; n++ {
			j.rstd[n] = rmsRowForward(j.out[n*C:n*C+C], j.inp[n*C:n*C+C], w, j.eps)
		}
	case j.params:
		dw := j.dweight[lo:hi]
		k := vecHead(hi - lo)
		for n := 0; n < j.N; n++ {
			x := j.inp[n*C+lo : n*C+hi]
			d := j.dout[n*C+lo : n*C+hi]
			s := j.rstd[n]
			if k > 0 {
				lnDwAVX2(ptr(dw), ptr(x), ptr(d), k, 0, s)
			}
			for i := k; i < len(x); i++ {
				dw[i] += x[i] * s * d[i]
			}
		}
	default:
		w := j.weight[:C]
		for n := lo; n < hi; n++ {
			rmsRowBackward(j.out[n*C:n*C+C], j.inp[n*C:n*C+C], j.dout[n*C:n*C+C], w, j.rstd[n])
		}
	}
}

// rmsRowForward normalizes one row and returns its rstd: vector code for
// the multiple-of-8 head, the Go loop for the rest.
func rmsRowForward(o, x, w []float32, eps float64) float32 {
	C := len(x)
	k := vecHead(C)
	if k == 0 {
		return rmsRowForwardRef(o, x, w, eps)
	}
	ms := sumSqDevAVX2(ptr(x), k, 0)
	for _, v := range x[k:] {
		ms += v * v
	}
	ms /= float32(C)
	s := float32(1 / math.Sqrt(float64(ms)+eps))
	lnApplyAVX2(ptr(o), ptr(x), ptr(w), nil, k, 0, s)
	for i := k; i < C; i++ {
		o[i] = x[i] * s * w[i]
	}
	return s
}

// rmsRowForwardRef is the portable RMSNorm row: the reference
// rmsRowForward is tested against.
func rmsRowForwardRef(o, x, w []float32, eps float64) float32 {
	var ms float32
	for _, v := range x {
		ms += v * v
	}
	ms /= float32(len(x))
	s := float32(1 / math.Sqrt(float64(ms)+eps))
	for i, v := range x {
		o[i] = v * s * w[i]
	}
	return s
}

// rmsRowBackward adds one row's dL/dinp into di. With n = x·s and
// g = w·d: di += s·(g − n·mean(g·n)), LayerNorm's backward without the
// mean term, so LayerNorm's vector kernels do it with mean 0.
func rmsRowBackward(di, x, d, w []float32, s float32) {
	C := len(x)
	k := vecHead(C)
	if k == 0 {
		rmsRowBackwardRef(di, x, d, w, s)
		return
	}
	_, gn := lnBwdDotsAVX2(ptr(x), ptr(d), ptr(w), k, 0, s)
	for i := k; i < C; i++ {
		gn += w[i] * d[i] * x[i] * s
	}
	gn /= float32(C)
	lnBwdApplyAVX2(ptr(di), ptr(x), ptr(d), ptr(w), k, 0, s, 0, gn)
	for i := k; i < C; i++ {
		n := x[i] * s
		di[i] += (w[i]*d[i] - n*gn) * s
	}
}

// rmsRowBackwardRef is the portable row backward: the reference
// rmsRowBackward is tested against.
func rmsRowBackwardRef(di, x, d, w []float32, s float32) {
	var gn float32
	for i, v := range x {
		gn += w[i] * d[i] * v * s
	}
	gn /= float32(len(x))
	for i, v := range x {
		di[i] += (w[i]*d[i] - v*s*gn) * s
	}
}
