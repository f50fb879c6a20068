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

//go:noescape
func addAVX2(dst, src *float32, n int)

//go:noescape
func add2AVX2(dst, a, b *float32, n int)

// adamRows is the number of parameter rows adamAVX2 reads.
const adamRows = 8

//go:noescape
func adamAVX2(w, gr, m, v *float32, n int, p *[adamRows][8]float32)

// addVec does dst[i] += src[i] over the multiple-of-8 head of src and
// returns how many it did (0 without AVX2).
func addVec(dst, src []float32) int {
	n := len(src) &^ 7
	if !haveVec || n == 0 {
		return 0
	}
	_ = dst[n-1]
	addAVX2(unsafe.SliceData(dst), unsafe.SliceData(src), n)
	return n
}

// add2Vec does dst[i] += a[i] + b[i] over the multiple-of-8 head of a.
func add2Vec(dst, a, b []float32) int {
	n := len(a) &^ 7
	if !haveVec || n == 0 {
		return 0
	}
	_, _ = dst[n-1], b[n-1]
	add2AVX2(unsafe.SliceData(dst), unsafe.SliceData(a), unsafe.SliceData(b), n)
	return n
}

// adamVec runs one AdamW update over the multiple-of-8 head of w (see
// adamJob.run for the scalars) and returns how many entries it did.
func adamVec(w, g, m, v []float32, b1, b2, bc2, eps, decay, step float32) int {
	n := len(w) &^ 7
	if !haveVec || n == 0 {
		return 0
	}
	_, _, _ = g[n-1], m[n-1], v[n-1]
	var p [adamRows][8]float32
	for i, x := range [adamRows]float32{b1, 1 - b1, b2, 1 - b2, bc2, eps, decay, step} {
		for k := range p[i] {
			p[i][k] = x
		}
	}
	adamAVX2(unsafe.SliceData(w), unsafe.SliceData(g), unsafe.SliceData(m), unsafe.SliceData(v), n, &p)
	return n
}

//go:noescape
func sumAVX2(x *float32, n int) float32

//go:noescape
func sumSqDevAVX2(x *float32, n int, m float32) float32

//go:noescape
func lnApplyAVX2(out, x, w, b *float32, n int, m, s float32)

//go:noescape
func lnBwdDotsAVX2(x, d, w *float32, n int, m, s float32) (dmean, dnorm float32)

//go:noescape
func lnBwdApplyAVX2(di, x, d, w *float32, n int, m, s, dmean, dnorm float32)

//go:noescape
func lnDwAVX2(dw, x, d *float32, n int, m, s float32)

// vecHead is how many leading entries of an n-long row the vector
// LayerNorm kernels handle (a multiple of 8; 0 without AVX2).
func vecHead(n int) int {
	if !haveVec {
		return 0
	}
	return n &^ 7
}

// ptr is the address of x's first element, or nil for an empty slice.
func ptr(x []float32) *float32 { return unsafe.SliceData(x) }

//go:noescape
func swigluFwdAVX2(out, gate, up *float32, n int, c *[vecRows][8]float32)

//go:noescape
func swigluBwdAVX2(dg, du, dout, gate, up *float32, n int, c *[vecRows][8]float32)

// swigluForwardVec does the multiple-of-8 head of out = silu(g)·u in
// vector code and returns how many entries it did (0 without AVX2).
func swigluForwardVec(out, g, u []float32) int {
	n := len(g) &^ 7
	if !haveVec || n == 0 {
		return 0
	}
	_, _ = out[n-1], u[n-1]
	swigluFwdAVX2(unsafe.SliceData(out), unsafe.SliceData(g), unsafe.SliceData(u), n, &vecConsts)
	return n
}

// swigluBackwardVec is swigluForwardVec for the backward pass.
func swigluBackwardVec(dg, du, dout, g, u []float32) int {
	n := len(g) &^ 7
	if !haveVec || n == 0 {
		return 0
	}
	_, _, _, _ = dg[n-1], du[n-1], dout[n-1], u[n-1]
	swigluBwdAVX2(unsafe.SliceData(dg), unsafe.SliceData(du), unsafe.SliceData(dout), unsafe.SliceData(g), unsafe.SliceData(u), n, &vecConsts)
	return n
}
