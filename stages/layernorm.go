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
	parallelFor(&x.wg, N, 16, &x.lnFwdJob)
}

type lnFwdJob struct {
	out, mean, rstd, inp, weight, bias []float32
	C                                  int
}

func (j *lnFwdJob) run(_, lo, hi int) {
	C := j.C
	w := j.weight[:C]
	for n := lo; n < hi; n++ {
		x := j.inp[n*C : n*C+C]
		var m float32
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
		s := float32(1 / math.Sqrt(float64(vr)+lnEps))
		o := j.out[n*C : n*C+C]
		if j.bias != nil {
			b := j.bias[:C]
			for i, v := range x {
				o[i] = (v-m)*s*w[i] + b[i]
			}
		} else {
			for i, v := range x {
				o[i] = (v - m) * s * w[i]
			}
		}
		j.mean[n] = m
		j.rstd[n] = s
	}
}

// layernormBackward adds the gradients of layernormForward into dinp,
// dweight and dbias (dbias may be nil).
//
//	dinp (N, C), dweight (C), dbias (C), dout (N, C), inp (N, C), weight (C), mean, rstd (N)
func layernormBackward(x *exec, dinp, dweight, dbias, dout, inp, weight, mean, rstd []float32, N, C int) {
	x.lnBwdJob = lnBwdJob{dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, false}
	parallelFor(&x.wg, N, 16, &x.lnBwdJob)
	// Parameter gradients are sums over rows: split by column so each entry
	// is still summed over rows in order, whatever the number of cores.
	x.lnBwdJob.params = true
	parallelFor(&x.wg, C, 32, &x.lnBwdJob)
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
		for n := 0; n < j.N; n++ {
			x := j.inp[n*C+lo : n*C+hi]
			d := j.dout[n*C+lo : n*C+hi]
			m, s := j.mean[n], j.rstd[n]
			for i, v := range x {
				dw[i] += (v - m) * s * d[i]
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
		x := j.inp[n*C : n*C+C]
		d := j.dout[n*C : n*C+C]
		m, s := j.mean[n], j.rstd[n]
		var dmean, dnormMean float32
		for i, v := range x {
			wd := w[i] * d[i]
			dmean += wd
			dnormMean += wd * (v - m) * s
		}
		dmean /= float32(C)
		dnormMean /= float32(C)
		di := j.dinp[n*C : n*C+C]
		for i, v := range x {
			norm := (v - m) * s
			di[i] += (w[i]*d[i] - dmean - norm*dnormMean) * s
		}
	}
}
