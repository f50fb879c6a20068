package compression

import (
	"math"

	"github.com/narrowband/narrowband/stages/kernels"
)

// Dense products for the low-rank and subspace codecs, row-major. They go
// through the project's one fast Sgemm (stages/kernels: packed AVX2 kernel,
// deterministic whatever the thread count; it may use its own worker pool,
// bounded by kernels.SetThreads). The *Ref versions below are the slow,
// obviously-correct references the tests compare against.

// mulAB sets C (n×r) = A (n×m) · B (m×r).
func mulAB(C, A, B []float32, n, m, r int) {
	if n == 0 || r == 0 {
		return
	}
	if m == 0 {
		clear(C[:n*r])
		return
	}
	kernels.Sgemm(false, false, n, r, m, 1, A[:n*m], m, B[:m*r], r, 0, C[:n*r], r)
}

// mulAtB sets C (m×r) = Aᵀ · B where A is n×m and B is n×r.
func mulAtB(C, A, B []float32, n, m, r int) {
	if m == 0 || r == 0 {
		return
	}
	if n == 0 {
		clear(C[:m*r])
		return
	}
	kernels.Sgemm(true, false, m, r, n, 1, A[:n*m], m, B[:n*r], r, 0, C[:m*r], r)
}

// mulABt sets C (n×m) = A (n×r) · Bᵀ where B is m×r.
func mulABt(C, A, B []float32, n, m, r int) {
	if n == 0 || m == 0 {
		return
	}
	if r == 0 {
		clear(C[:n*m])
		return
	}
	kernels.Sgemm(false, true, n, m, r, 1, A[:n*r], r, B[:m*r], r, 0, C[:n*m], m)
}

// mulABRef is the reference for mulAB.
func mulABRef(C, A, B []float32, n, m, r int) {
	for i := 0; i < n; i++ {
		c := C[i*r : (i+1)*r]
		clear(c)
		a := A[i*m : (i+1)*m]
		for j, av := range a {
			if av == 0 {
				continue
			}
			b := B[j*r : (j+1)*r]
			for k := range c {
				c[k] += av * b[k]
			}
		}
	}
}

// mulAtBRef is the reference for mulAtB.
func mulAtBRef(C, A, B []float32, n, m, r int) {
	clear(C[:m*r])
	for i := 0; i < n; i++ {
		b := B[i*r : (i+1)*r]
		a := A[i*m : (i+1)*m]
		for j, av := range a {
			if av == 0 {
				continue
			}
			c := C[j*r : (j+1)*r]
			for k := range c {
				c[k] += av * b[k]
			}
		}
	}
}

// mulABtRef is the reference for mulABt.
func mulABtRef(C, A, B []float32, n, m, r int) {
	for i := 0; i < n; i++ {
		a := A[i*r : (i+1)*r]
		c := C[i*m : (i+1)*m]
		for j := range c {
			b := B[j*r : (j+1)*r]
			var s float32
			for k, av := range a {
				s += av * b[k]
			}
			c[j] = s
		}
	}
}

// orthonormalize makes the r columns of A (n×r) orthonormal in place by
// modified Gram-Schmidt, run twice ("twice is enough") in float64 so the
// result is orthonormal to float32 precision even when columns are nearly
// dependent. A column whose norm falls below depTol of its norm before
// projection is dependent on the earlier ones (the input had rank < r): its
// remainder is rounding noise, and normalizing noise would give a column
// that is not orthogonal at all, so it is set to zero instead. Zero columns
// keep the low-rank codec exact (P·Pᵀ is still a projection).
func orthonormalize(A []float32, n, r int, scratch *[]float64) {
	if cap(*scratch) < n*r {
		*scratch = make([]float64, n*r)
	}
	col := (*scratch)[:n*r] // column-major copy: contiguous columns
	for i := 0; i < n; i++ {
		for k := 0; k < r; k++ {
			col[k*n+i] = float64(A[i*r+k])
		}
	}
	// float32 data carries ~1e-7 relative noise; after the n-term sums of
	// M·Q, directions 1e-5 below a column's norm are indistinguishable
	// from it.
	orthonormalize64(col, n, r, 1e-5)
	for i := 0; i < n; i++ {
		for k := 0; k < r; k++ {
			A[i*r+k] = float32(col[k*n+i])
		}
	}
}

// orthonormalize64 runs MGS twice on the r contiguous columns of col
// (column-major n×r), zeroing columns that lose all but depTol of their norm
// to the projection. Products are wrapped in float64() so the compiler
// cannot fuse them into FMAs: every platform then computes the same bits,
// which matters for the subspace basis that each stage derives on its own.
func orthonormalize64(col []float64, n, r int, depTol float64) {
	var zeroBuf [64]bool
	zero := zeroBuf[:0]
	if r > len(zeroBuf) {
		zero = make([]bool, r)
	} else {
		zero = zeroBuf[:r]
	}
	for pass := 0; pass < 2; pass++ {
		for k := 0; k < r; k++ {
			if zero[k] {
				continue
			}
			v := col[k*n : (k+1)*n]
			n0 := dot64(v, v)
			for j := 0; j < k; j++ {
				if zero[j] {
					continue
				}
				u := col[j*n : (j+1)*n]
				d := dot64(u, v)
				for i := range v {
					v[i] -= float64(d * u[i])
				}
			}
			s := dot64(v, v)
			if s == 0 || s < float64(depTol*depTol)*n0 {
				clear(v)
				zero[k] = true
				continue
			}
			inv := 1 / math.Sqrt(s)
			for i := range v {
				v[i] *= inv
			}
		}
	}
}

// rng is splitmix64: tiny, seedable, and specified bit-for-bit here, so the
// same seed gives the same numbers on every Go version and platform (the
// subspace basis depends on that).
type rng struct{ s uint64 }

func newRNG(seed uint64, stream string) *rng {
	h := seed
	for _, c := range []byte(stream) {
		h = (h ^ uint64(c)) * 0x100000001b3
	}
	return &rng{s: h}
}

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// uniform returns a float64 in [0, 1) with 53 random bits.
func (r *rng) uniform() float64 { return float64(r.next()>>11) * (1.0 / (1 << 53)) }

// normal returns an approximately standard normal value as the scaled sum of
// four uniforms (Irwin–Hall): mean 0, variance 1, and only additions, so it
// is bit-identical everywhere (math.Log/Cos are not guaranteed to be).
func (r *rng) normal() float64 {
	s := r.uniform() + r.uniform() + r.uniform() + r.uniform()
	return (s - 2) * math.Sqrt(3)
}

// dot64 is a dot product with four independent accumulators (a single one
// is latency-bound), summed in a fixed order so the result is the same on
// every platform.
func dot64(u, v []float64) float64 {
	v = v[:len(u)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(u); i += 4 {
		s0 += float64(u[i] * v[i])
		s1 += float64(u[i+1] * v[i+1])
		s2 += float64(u[i+2] * v[i+2])
		s3 += float64(u[i+3] * v[i+3])
	}
	for ; i < len(u); i++ {
		s0 += float64(u[i] * v[i])
	}
	return (s0 + s1) + (s2 + s3)
}
