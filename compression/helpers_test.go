package compression

import "math"

func gaussian(seed uint64, n int, std float64) []float32 {
	g := newRNG(seed, "test")
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(g.normal() * std)
	}
	return x
}

// lowRankMatrix returns a rows×cols matrix of rank r (A·B with Gaussian A, B).
func lowRankMatrix(seed uint64, rows, cols, r int) []float32 {
	a := gaussian(seed, rows*r, 1)
	b := gaussian(seed+1, r*cols, 1)
	x := make([]float32, rows*cols)
	mulAB(x, a, b, rows, r, cols)
	return x
}

// activationLike is a stand-in for a residual stream: a decaying spectrum
// (singular values ∝ 1/(1+i) over 64 directions) plus 5% isotropic noise.
func activationLike(seed uint64, rows, cols int) []float32 {
	const m = 64
	a := gaussian(seed, rows*m, 1)
	for i := 0; i < rows; i++ {
		for j := 0; j < m; j++ {
			a[i*m+j] /= float32(1 + j)
		}
	}
	b := gaussian(seed+1, m*cols, 1)
	x := make([]float32, rows*cols)
	mulAB(x, a, b, rows, m, cols)
	noise := gaussian(seed+2, rows*cols, 0.05)
	for i := range x {
		x[i] += noise[i]
	}
	return x
}

func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}
