//go:build !purego

package stages

import (
	"math"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// haveVec says the AVX2+FMA versions of the elementwise layers run here.
// It is decided once, so a process always takes the same path and its
// results stay bit-identical from run to run and for any core count.
var haveVec = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// vecRows is the number of constant rows in vecConsts.
const vecRows = 30

// vecConsts holds each constant of the assembly kernels 8 times (one ymm
// register's worth), in the order of the C_* offsets in vec_amd64.s.
var vecConsts = func() (c [vecRows][8]float32) {
	vals := [vecRows]float32{
		geluScale, 0.044715, tanhClamp, -tanhClamp,
		tanhA13, tanhA11, tanhA9, tanhA7, tanhA5, tanhA3, tanhA1,
		tanhB6, tanhB4, tanhB2, tanhB0,
		0.5, 1, 3 * 0.044715,
		math.Float32frombits(127), 88, -87, 1.44269504088896341, 0.693359375, -2.12194440e-4,
		1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1,
	}
	for i, v := range vals {
		for k := range c[i] {
			c[i][k] = v
		}
	}
	return c
}()

//go:noescape
func geluFwdAVX2(out, inp *float32, n int, c *[vecRows][8]float32)

//go:noescape
func geluBwdAVX2(dinp, inp, fwd, dout *float32, n int, c *[vecRows][8]float32)

// geluForwardVec does the multiple-of-8 head of out = GELU(inp) in vector
// code and returns how many elements it did (0 without AVX2).
func geluForwardVec(out, inp []float32) int {
	n := len(inp) &^ 7
	if !haveVec || n == 0 {
		return 0
	}
	_ = out[n-1]
	geluFwdAVX2(unsafe.SliceData(out), unsafe.SliceData(inp), n, &vecConsts)
	return n
}

// geluBackwardVec is geluForwardVec for the backward pass.
func geluBackwardVec(dinp, inp, fwd, dout []float32) int {
	n := len(inp) &^ 7
	if !haveVec || n == 0 {
		return 0
	}
	_, _, _ = dinp[n-1], fwd[n-1], dout[n-1]
	geluBwdAVX2(unsafe.SliceData(dinp), unsafe.SliceData(inp), unsafe.SliceData(fwd), unsafe.SliceData(dout), n, &vecConsts)
	return n
}

//go:noescape
func maxAVX2(x *float32, n int) float32

//go:noescape
func expSubSumAVX2(x *float32, n int, m float32, c *[vecRows][8]float32) float32

//go:noescape
func scaleAVX2(x *float32, n int, s float32)

// softmaxInPlace turns x into softmax(x) (max-shifted, so any finite
// input is safe). With AVX2 the multiple-of-8 head runs in vector code
// and the rest in Go; the split depends only on len(x), so results are
// the same on every call.
func softmaxInPlace(x []float32) (maxv, sum float32) {
	k := len(x) &^ 7
	if !haveVec || k == 0 {
		return softmaxRef(x)
	}
	maxv = maxAVX2(unsafe.SliceData(x), k)
	for _, v := range x[k:] {
		maxv = max(maxv, v)
	}
	sum = expSubSumAVX2(unsafe.SliceData(x), k, maxv, &vecConsts)
	for i, v := range x[k:] {
		e := expf(v - maxv)
		x[k+i] = e
		sum += e
	}
	inv := 1 / sum
	scaleAVX2(unsafe.SliceData(x), k, inv)
	for i := range x[k:] {
		x[k+i] *= inv
	}
	return maxv, sum
}
