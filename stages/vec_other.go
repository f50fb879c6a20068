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
