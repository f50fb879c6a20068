package stages

import "github.com/narrowband/narrowband/stages/kernels"

// matmulForward computes out = inp·weightᵀ + bias + residual for N rows,
// as PyTorch's Linear with weight (OC, C) followed by a residual add.
// bias and residual may be nil; adding the residual here is how a block
// forms x + proj(y) without copying x first.
//
//	out (N, OC), inp (N, C), weight (OC, C), bias (OC), residual (N, OC)
func matmulForward(out, inp, weight, bias, residual []float32, N, C, OC int) {
	kernels.Sgemm(false, true, N, OC, C, 1, inp, C, weight, C, 0, out, OC)
	switch {
	case bias != nil && residual != nil:
		bias = bias[:OC]
		for n := 0; n < N; n++ {
			row, res := out[n*OC:n*OC+OC], residual[n*OC:n*OC+OC]
			k := add2Vec(row, bias, res)
			for o, b := range bias[k:] {
				row[k+o] += b + res[k+o]
			}
		}
	case bias != nil:
		bias = bias[:OC]
		for n := 0; n < N; n++ {
			row := out[n*OC : n*OC+OC]
			k := addVec(row, bias)
			for o, b := range bias[k:] {
				row[k+o] += b
			}
		}
	case residual != nil:
		k := addVec(out, residual[:N*OC])
		for i, r := range residual[k : N*OC] {
			out[k+i] += r
		}
	}
}

// matmulBackward adds the gradients of matmulForward into dweight and dbias
// and writes dL/dinp into dinp, or adds it there when accumulate is set
// (any of the three may be nil). Overwriting saves clearing a scratch
// buffer before every call.
//
//	dinp (N, C), dweight (OC, C), dbias (OC), dout (N, OC), inp (N, C), weight (OC, C)
func matmulBackward(dinp, dweight, dbias, dout, inp, weight []float32, N, C, OC int, accumulate bool) {
	if dinp != nil {
		var beta float32
		if accumulate {
			beta = 1
		}
		kernels.Sgemm(false, false, N, C, OC, 1, dout, OC, weight, C, beta, dinp, C)
	}
	if dweight != nil {
		kernels.Sgemm(true, false, OC, C, N, 1, dout, OC, inp, C, 1, dweight, C)
	}
	if dbias != nil {
		dbias = dbias[:OC]
		// Rows in order, so the sum is the same on every machine.
		for n := 0; n < N; n++ {
			row := dout[n*OC : n*OC+OC]
			k := addVec(dbias, row)
			for o, d := range row[k:] {
				dbias[k+o] += d
			}
		}
	}
}
