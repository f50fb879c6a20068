//go:build !amd64 || purego

package stages

// haveVec is false: no vector versions on this platform; every layer runs
// its portable Go loop.
const haveVec = false

func geluForwardVec(out, inp []float32) int { return 0 }

func geluBackwardVec(dinp, inp, fwd, dout []float32) int { return 0 }

// softmaxInPlace turns x into softmax(x) and returns max(x) and
// Σ e^(x − max).
func softmaxInPlace(x []float32) (maxv, sum float32) { return softmaxRef(x) }

func addVec(dst, src []float32) int { return 0 }

func add2Vec(dst, a, b []float32) int { return 0 }

func adamVec(w, g, m, v []float32, b1, b2, bc2, eps, decay, step float32) int { return 0 }

// vecHead is 0: the LayerNorm kernels below are never called here.
func vecHead(n int) int { return 0 }

func ptr(x []float32) *float32 { return nil }

func sumAVX2(x *float32, n int) float32 { panic("stages: no vector kernels on this platform") }

func sumSqDevAVX2(x *float32, n int, m float32) float32 {
	panic("stages: no vector kernels on this platform")
}

func lnApplyAVX2(out, x, w, b *float32, n int, m, s float32) {
	panic("stages: no vector kernels on this platform")
}

func lnBwdDotsAVX2(x, d, w *float32, n int, m, s float32) (dmean, dnorm float32) {
	panic("stages: no vector kernels on this platform")
}

func lnBwdApplyAVX2(di, x, d, w *float32, n int, m, s, dmean, dnorm float32) {
	panic("stages: no vector kernels on this platform")
}

func lnDwAVX2(dw, x, d *float32, n int, m, s float32) {
	panic("stages: no vector kernels on this platform")
}

func swigluForwardVec(out, g, u []float32) int { return 0 }

func swigluBackwardVec(dg, du, dout, g, u []float32) int { return 0 }
