package stages

// swigluForward is the middle of Hugging Face's LlamaMLP,
// act_fn(gate_proj(x)) · up_proj(x) with act_fn = SiLU, on the fused
// gate/up product: row n of gu holds the I gate values, then the I up
// values.
//
//	out (N, I), gu (N, 2I)
func swigluForward(x *exec, out, gu []float32, N, I int) {
	x.swigluJob = swigluJob{out: out, gu: gu, I: I}
	parallelFor(&x.par, N, 4, &x.swigluJob)
}

// swigluBackward writes dL/d(gate, up) into dgu from dout = dL/d(out):
// with σ = sigmoid(g), d gate = dout·u·σ·(1 + g·(1 − σ)) and
// d up = dout·g·σ.
//
//	dgu (N, 2I), dout (N, I), gu (N, 2I)
func swigluBackward(x *exec, dgu, dout, gu []float32, N, I int) {
	x.swigluJob = swigluJob{out: dgu, gu: gu, dout: dout, I: I, backward: true}
	parallelFor(&x.par, N, 4, &x.swigluJob)
}

type swigluJob struct {
	out, gu, dout []float32
	I             int
	backward      bool
}

func (j *swigluJob) run(_, lo, hi int) {
	I := j.I
	for n := lo; n < hi; n++ {
		g, u := j.gu[2*n*I:2*n*I+I], j.gu[2*n*I+I:2*n*I+2*I]
		if j.backward {
			dg, du, dout := j.out[2*n*I:2*n*I+I], j.out[2*n*I+I:2*n*I+2*I], j.dout[n*I:n*I+I]
			k := swigluBackwardVec(dg, du, dout, g, u)
			swigluRowBackward(dg[k:], du[k:], dout[k:], g[k:], u[k:])
		} else {
			out := j.out[n*I : n*I+I]
			k := swigluForwardVec(out, g, u)
			swigluRowForward(out[k:], g[k:], u[k:])
		}
	}
}

// swigluRowForward is out = silu(g)·u with silu(g) = g/(1 + e^−g) (PyTorch's
// F.silu); e^−g overflows to +Inf for g < −88, giving −0 as it should. It
// is the portable reference and the tail of the vector version, which
// clamps e^−g at e^88 (silu(g) ≈ −5e−37 instead of −0 for g < −88) and
// agrees with it to float32 rounding.
func swigluRowForward(out, g, u []float32) {
	out, u = out[:len(g)], u[:len(g)]
	for i, v := range g {
		out[i] = v / (1 + expf(-v)) * u[i]
	}
}

// swigluRowBackward writes one row's gate and up gradients.
func swigluRowBackward(dg, du, dout, g, u []float32) {
	dg, du, dout, u = dg[:len(g)], du[:len(g)], dout[:len(g)], u[:len(g)]
	for i, v := range g {
		sg := 1 / (1 + expf(-v))
		d := dout[i]
		du[i] = d * v * sg
		dg[i] = d * u[i] * sg * (1 + v*(1-sg))
	}
}
