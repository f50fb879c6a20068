package stages

import "github.com/narrowband/narrowband/stages/kernels"

// matmulForward computes out = inp·weightᵀ + bias for N rows, as PyTorch's
// Linear with weight (OC, C). With accumulate the product is added to what
// out holds, which is how a residual connection is formed without a
// separate buffer for the projection. bias may be nil.
//
//	out (N, OC), inp (N, C), weight (OC, C), bias (OC)
func matmulForward(out, inp, weight, bias []float32, N, C, OC int, accumulate bool) {
	var beta float32
	if accumulate {
		beta = 1
	}
	kernels.Sgemm(false, true, N, OC, C, 1, inp, C, weight, C, beta, out, OC)
	if bias != nil {
		bias = bias[:OC]
		for n := 0; n < N; n++ {
			row := out[n*OC : n*OC+OC]
			for o, b := range bias {
				row[o] += b
			}
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
			for o, d := range row {
				dbias[o] += d
			}
		}
	}
}
