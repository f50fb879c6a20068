package stages

import (
	"math"
)

const lnEps = 1e-5 // PyTorch's LayerNorm default

// layernormForward normalizes each of the N rows of inp over its C entries
// and applies weight and bias (bias may be nil: nanoGPT's bias=False). mean
// and rstd (1/std) are kept for the backward pass.
//
//	out (N, C), mean (N), rstd (N), inp (N, C), weight (C), bias (C)
func layernormForward(x *exec, out, mean, rstd, inp, weight, bias []float32, N, C int) {
	x.lnFwdJob = lnFwdJob{out, mean, rstd, inp, weight, bias, C}
	parallelFor(&x.par, N, 16, &x.lnFwdJob)
}

type lnFwdJob struct {
	out, mean, rstd, inp, weight, bias []float32
	C                                  int
}

func (j *lnFwdJob) run(_, lo, hi int) {
	C := j.C
	w := j.weight[:C]
	var b []float32
	if j.bias != nil {
		b = j.bias[:C]
	}
	for n := lo; n < hi; n++ {
		j.mean[n], j.rstd[n] = lnRowForward(j.out[n*C:n*C+C], j.inp[n*C:n*C+C], w, b)
	}
}

// lnRowForward normalizes one row: vector code for the multiple-of-8 head
// (8 partial sums), the Go loop for the rest.
func lnRowForward(o, x, w, b []float32) (m, s float32) {
	C := len(x)
	k := vecHead(C)
	if k == 0 {
		return lnRowForwardRef(o, x, w, b)
	}
	m = sumAVX2(ptr(x), k)
	for _, v := range x[k:] {
		m += v
	}
	m /= float32(C)
	vr := sumSqDevAVX2(ptr(x), k, m)
	for _, v := range x[k:] {
		d := v - m
		vr += d * d
	}
	vr /= float32(C)
	s = float32(1 / math.Sqrt(float64(vr)+lnEps))
	lnApplyAVX2(ptr(o), ptr(x), ptr(w), ptr(b), k, m, s)
	for i := k; i < C; i++ {
		o[i] = (x[i] - m) * s * w[i]
		if b != nil {
			o[i] += b[i]
		}
	}
	return m, s
}

// lnRowForwardRef is the portable LayerNorm row: the reference
// lnRowForward is tested against.
func lnRowForwardRef(o, x, w, b []float32) (m, s float32) {
	C := len(x)
	for _, v := range x {
		m += v
	}
	m /= float32(C)
	var vr float32
	for _, v := range x {
		d := v - m
		vr += d * d
	}
	vr /= float32(C)
	s = float32(1 / math.Sqrt(float64(vr)+lnEps))
	if b != nil {
		for i, v := range x {
			o[i] = (v-m)*s*w[i] + b[i]
		}
	} else {
		for i, v := range x {
			o[i] = (v - m) * s * w[i]
		}
	}
	return m, s
}

// layernormBackward adds the gradients of layernormForward into dinp,
// dweight and dbias (dbias may be nil).
//
//	dinp (N, C), dweight (C), dbias (C), dout (N, C), inp (N, C), weight (C), mean, rstd (N)
func layernormBackward(x *exec, dinp, dweight, dbias, dout, inp, weight, mean, rstd []float32, N, C int) {
	x.lnBwdJob = lnBwdJob{dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, false}
	parallelFor(&x.par, N, 16, &x.lnBwdJob)
	// Parameter gradients are sums over rows: split by column so each entry
	// is still summed over rows in order, whatever the number of cores.
	x.lnBwdJob.params = true
	parallelFor(&x.par, C, 32, &x.lnBwdJob)
}

type lnBwdJob struct {
	dinp, dweight, dbias, dout, inp, weight, mean, rstd []float32
	N, C                                                int
	params                                              bool
}

func (j *lnBwdJob) run(_, lo, hi int) {
	C := j.C
	if j.params {
		dw := j.dweight[lo:hi]
		k := vecHead(hi - lo)
		for n := 0; n < j.N; n++ {
			x := j.inp[n*C+lo : n*C+hi]
			d := j.dout[n*C+lo : n*C+hi]
			m, s := j.mean[n], j.rstd[n]
			if k > 0 {
				lnDwAVX2(ptr(dw), ptr(x), ptr(d), k, m, s)
			}
			for i := k; i < len(x); i++ {
				dw[i] += (x[i] - m) * s * d[i]
			}
			if j.dbias != nil {
				db := j.dbias[lo:hi]
				k := addVec(db, d)
				for i, v := range d[k:] {
					db[k+i] += v
				}
			}
		}
		return
	}
	w := j.weight[:C]
	for n := lo; n < hi; n++ {
		lnRowBackward(j.dinp[n*C:n*C+C], j.inp[n*C:n*C+C], j.dout[n*C:n*C+C], w, j.mean[n], j.rstd[n])
	}
}

// lnRowBackward adds one row's dL/dinp into di: vector code for the
// multiple-of-8 head, the Go loop for the rest.
func lnRowBackward(di, x, d, w []float32, m, s float32) {
	C := len(x)
	k := vecHead(C)
	if k == 0 {
		lnRowBackwardRef(di, x, d, w, m, s)
		return
	}
	dmean, dnormMean := lnBwdDotsAVX2(ptr(x), ptr(d), ptr(w), k, m, s)
	for i := k; i < C; i++ {
		wd := w[i] * d[i]
		dmean += wd
		dnormMean += wd * (x[i] - m) * s
	}
	dmean /= float32(C)
	dnormMean /= float32(C)
	lnBwdApplyAVX2(ptr(di), ptr(x), ptr(d), ptr(w), k, m, s, dmean, dnormMean)
	for i := k; i < C; i++ {
		norm := (x[i] - m) * s
		di[i] += (w[i]*d[i] - dmean - norm*dnormMean) * s
	}
}

// lnRowBackwardRef is the portable row backward: the reference
// lnRowBackward is tested against.
func lnRowBackwardRef(di, x, d, w []float32, m, s float32) {
	C := len(x)
	var dmean, dnormMean float32
	for i, v := range x {
		wd := w[i] * d[i]
		dmean += wd
		dnormMean += wd * (v - m) * s
	}
	dmean /= float32(C)
	dnormMean /= float32(C)
	for i, v := range x {
		norm := (v - m) * s
		di[i] += (w[i]*d[i] - dmean - norm*dnormMean) * s
	}
}
