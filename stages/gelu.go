package stages

import (
	"math"
)

// geluScale is sqrt(2/π) of GPT-2's tanh approximation of GELU.
var geluScale = float32(math.Sqrt(2 / math.Pi))

// geluForward applies GELU (tanh approximation, as GPT-2) elementwise.
//
//	out (n), inp (n)
func geluForward(x *exec, out, inp []float32, n int) {
	x.geluJob = geluJob{out: out, inp: inp}
	parallelFor(&x.par, n, 4096, &x.geluJob)
}

// geluBackward writes dout·GELU'(inp) into dinp. out is what geluForward
// returned: the tanh it needs is recovered from it (tanh = 2·out/inp − 1,
// accurate to ~2e-7 absolute) instead of being computed again.
//
//	dinp (n), inp (n), out (n), dout (n)
func geluBackward(x *exec, dinp, inp, out, dout []float32, n int) {
	x.geluJob = geluJob{out: dinp, inp: inp, fwd: out, dout: dout, backward: true}
	parallelFor(&x.par, n, 4096, &x.geluJob)
}

type geluJob struct {
	out, inp, fwd, dout []float32
	backward            bool
}

func (j *geluJob) run(_, lo, hi int) {
	out, inp := j.out[lo:hi], j.inp[lo:hi]
	if !j.backward {
		k := geluForwardVec(out, inp)
		geluForwardRef(out[k:], inp[k:])
		return
	}
	fwd, dout := j.fwd[lo:hi], j.dout[lo:hi]
	k := geluBackwardVec(out, inp, fwd, dout)
	geluBackwardRef(out[k:], inp[k:], fwd[k:], dout[k:])
}

// geluForwardRef is the portable GELU forward: the reference the vector
// version is tested against, and the tail (and non-amd64) path.
func geluForwardRef(out, inp []float32) {
	out = out[:len(inp)]
	for i, v := range inp {
		u := geluScale * (v + 0.044715*v*v*v)
		// tanhf(u), written out: the call is too big for the
		// compiler to inline, and the call costs as much as the math.
		if u > tanhClamp {
			u = tanhClamp
		} else if u < -tanhClamp {
			u = -tanhClamp
		}
		u2 := u * u
		p := u2*tanhA13 + tanhA11
		p = u2*p + tanhA9
		p = u2*p + tanhA7
		p = u2*p + tanhA5
		p = u2*p + tanhA3
		p = u2*p + tanhA1
		q := u2*tanhB6 + tanhB4
		q = u2*q + tanhB2
		q = u2*q + tanhB0
		out[i] = 0.5 * v * (1 + u*p/q)
	}
}

// geluBackwardRef is the portable GELU backward (see geluForwardRef).
func geluBackwardRef(dinp, inp, fwd, dout []float32) {
	dinp, fwd, dout = dinp[:len(inp)], fwd[:len(inp)], dout[:len(inp)]
	for i, v := range inp {
		var th float32
		if v != 0 {
			th = 2*fwd[i]/v - 1
		}
		sech2 := 1 - th*th
		local := 0.5*(1+th) + 0.5*v*sech2*geluScale*(1+3*0.044715*v*v)
		dinp[i] = local * dout[i]
	}
}
