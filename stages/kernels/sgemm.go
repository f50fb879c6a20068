package kernels

import (
	"fmt"
	"sync"
	"unsafe"
)

// Cache blocking (Goto/BLIS). A kc×nr panel of packed B (16 KiB for the AVX2
// kernel) stays in L1 while the kernel sweeps an mc×kc block of packed A
// (144 KiB) held in L2; the kc×nc block of packed B lives in L2/L3.
const (
	blockK = 256  // kc: reduction steps per packed block
	blockM = 144  // mc: rows of packed A; a multiple of every kernel's mr
	blockN = 1024 // nc: columns of packed B, rounded down to the kernel's nr
)

// serialMACs is the size (m·n·k multiply-adds) below which a call runs on
// the calling goroutine only: handing work to another core costs a few
// microseconds, which a product this small (e.g. one attention head,
// 128×64·64×128 = 1 Mi MACs, ~30 µs on one core) would not earn back.
const serialMACs = 4 << 20

// Sgemm computes C = alpha·op(A)·op(B) + beta·C on row-major matrices, where
// op(X) is X or Xᵀ as transA/transB say. op(A) is m×k, op(B) is k×n and C is
// m×n; lda, ldb and ldc are the row strides of the stored A, B and C. When
// beta is 0, C is only written, never read (NaN in it is ignored).
//
// The result is bit-for-bit deterministic for given inputs and shapes,
// whatever the number of threads: work is split over output blocks, never
// over the k reduction.
//
// Sgemm is safe for concurrent use. Small products (under 4 Mi
// multiply-adds, such as one attention head) run on the calling goroutine,
// so many of them are best spread over cores by their caller, one
// goroutine per batch row or head.
//
// Like the BLAS it stands in for, Sgemm panics with CheckSgemm's message
// when dimensions, strides and slice lengths disagree: that is a bug in the
// caller, not a runtime condition. Code that takes shapes from outside (a
// config, a checkpoint) should call CheckSgemm first and return its error.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if err := CheckSgemm(transA, transB, m, n, k, a, lda, b, ldb, c, ldc); err != nil {
		panic(err.Error())
	}
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	g := gemm{
		kern: active, transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc,
	}
	threads := Threads()
	if threads <= 1 || m*n*k < serialMACs {
		buf := bufPool.Get()
		g.run(buf, 0, m, 0, n)
		bufPool.Put(buf)
		return
	}
	workers.run(g, threads)
}

// CheckSgemm reports the first inconsistency between Sgemm's dimensions,
// strides and slice lengths, naming the argument and the size it needs, or
// nil if Sgemm can run with them.
func CheckSgemm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) error {
	if m < 0 || n < 0 || k < 0 {
		return fmt.Errorf("kernels: Sgemm: negative dimension m=%d n=%d k=%d", m, n, k)
	}
	aRows, aCols := m, k
	if transA {
		aRows, aCols = k, m
	}
	bRows, bCols := k, n
	if transB {
		bRows, bCols = n, k
	}
	for _, x := range []struct {
		name       string
		s          []float32
		ld         int
		rows, cols int
	}{{"a", a, lda, aRows, aCols}, {"b", b, ldb, bRows, bCols}, {"c", c, ldc, m, n}} {
		if x.ld < max(1, x.cols) {
			return fmt.Errorf("kernels: Sgemm: ld%s=%d is less than the stored row width %d", x.name, x.ld, x.cols)
		}
		if x.rows > 0 && x.cols > 0 && len(x.s) < (x.rows-1)*x.ld+x.cols {
			return fmt.Errorf("kernels: Sgemm: len(%s)=%d is too short for a %d×%d matrix with row stride %d (need %d)",
				x.name, len(x.s), x.rows, x.cols, x.ld, (x.rows-1)*x.ld+x.cols)
		}
	}
	return nil
}

// scaleC sets C = beta·C, writing zeros (not beta·NaN) when beta is 0.
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		switch beta {
		case 0:
			clear(row)
		case 1:
		default:
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// gemm is one Sgemm call's arguments, shared read-only by the threads that
// each compute a rectangle of C.
type gemm struct {
	kern           *microKernel
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
}

// packBuf is one thread's packing space, grown once and then reused, so a
// steady stream of calls allocates nothing.
type packBuf struct {
	a, b []float32
	tile []float32 // an edge tile of C, padded to the kernel's mr×nr
}

// bufPool holds the packing buffers of calls that run on their caller's
// goroutine. Unlike a sync.Pool it never drops them at a garbage
// collection, so a training loop does not re-grow its buffers after every
// GC; it keeps as many as calls have ever run at once.
var bufPool freeList

type freeList struct {
	mu   sync.Mutex
	free []*packBuf
}

func (l *freeList) Get() *packBuf {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free[n-1] = nil
		l.free = l.free[:n-1]
		return b
	}
	return new(packBuf)
}

func (l *freeList) Put(b *packBuf) {
	l.mu.Lock()
	l.free = append(l.free, b)
	l.mu.Unlock()
}

// grow returns s resized to n floats, reallocating only when it is too
// small. New buffers start on a 64-byte boundary, so each 16-float step of a
// packed B panel is one cache line and the kernel's vector loads never
// straddle two.
func grow(s []float32, n int) []float32 {
	if cap(s) >= n {
		return s[:n]
	}
	const line = 64 / 4 // floats per cache line
	s = make([]float32, n+line)
	skip := (line - int(uintptr(unsafe.Pointer(unsafe.SliceData(s)))%64/4)) % line
	return s[skip : skip+n : skip+n]
}

// run computes rows [i0, i1) × columns [j0, j1) of C. i0 and j0 must be
// multiples of the kernel's mr and nr, so every thread sees the same tile
// grid and every element is computed by the same sequence of operations,
// whichever thread owns it.
func (g *gemm) run(buf *packBuf, i0, i1, j0, j1 int) {
	mr, nr := g.kern.mr, g.kern.nr
	kcMax := min(blockK, g.k)
	buf.a = grow(buf.a, kcMax*roundUp(min(blockM, i1-i0), mr))
	ncMax := g.kern.nc()
	buf.b = grow(buf.b, kcMax*roundUp(min(ncMax, j1-j0), nr))
	buf.tile = grow(buf.tile, mr*nr)
	for jc := j0; jc < j1; jc += ncMax {
		nc := min(ncMax, j1-jc)
		for pc := 0; pc < g.k; pc += blockK {
			kc := min(blockK, g.k-pc)
			// The first k block applies the caller's beta; later ones add.
			beta := g.beta
			if pc > 0 {
				beta = 1
			}
			packB(buf.b, g.b, g.ldb, g.transB, pc, kc, jc, nc, nr)
			for ic := i0; ic < i1; ic += blockM {
				mc := min(blockM, i1-ic)
				rows := g.packA(buf.a, ic, mc, pc, kc)
				g.macro(buf.a, buf.b, buf.tile, ic, mc, jc, 0, nc, kc, beta, rows)
			}
		}
	}
}

// packA packs rows [ic, ic+mc), steps [pc, pc+kc) of op(A) into dst, in
// the kernel's rows layout when A is not transposed and the kernel has a
// rows variant (it then reports true), else in the interleaved layout.
func (g *gemm) packA(dst []float32, ic, mc, pc, kc int) (rows bool) {
	if !g.transA && g.kern.rows != nil {
		packARows(dst, g.a, g.lda, ic, mc, pc, kc, g.kern.mr)
		return true
	}
	packA(dst, g.a, g.lda, g.transA, ic, mc, pc, kc, g.kern.mr)
	return false
}

// macro runs the micro-kernel over rows [ic, ic+mc) and the column panels
// [jr0, jr1) (offsets from jc, multiples of nr) of one packed block: packed
// A in pa, packed B in pb, tile an mr×nr scratch for edge tiles. rows says
// the A panels are packed for the kernel's rows variant.
func (g *gemm) macro(pa, pb, tile []float32, ic, mc, jc, jr0, jr1, kc int, beta float32, rows bool) {
	mr, nr := g.kern.mr, g.kern.nr
	fn := g.kern.fn
	if rows {
		// Both A layouts put panel i at i·kc·mr; only the kernel differs.
		rfn := g.kern.rows
		fn = func(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
			rfn(kc, a, kc, b, c, ldc, alpha, beta)
		}
	}
	for jr := jr0; jr < jr1; jr += nr {
		bp := pb[(jr/nr)*kc*nr:]
		cols := min(nr, jr1-jr)
		for ir := 0; ir < mc; ir += mr {
			ap := pa[(ir/mr)*kc*mr:]
			nrows := min(mr, mc-ir)
			off := (ic+ir)*g.ldc + jc + jr
			if nrows == mr && cols == nr {
				fn(kc, ap, bp, g.c[off:], g.ldc, g.alpha, beta)
				continue
			}
			// Edge tile: run the same kernel on a padded copy, so edge
			// elements get exactly the arithmetic of interior ones.
			t := tile
			if beta != 0 {
				for r := 0; r < nrows; r++ {
					copy(t[r*nr:r*nr+cols], g.c[off+r*g.ldc:])
				}
			}
			fn(kc, ap, bp, t, nr, g.alpha, beta)
			for r := 0; r < nrows; r++ {
				copy(g.c[off+r*g.ldc:off+r*g.ldc+cols], t[r*nr:])
			}
		}
	}
}

func roundUp(x, to int) int { return (x + to - 1) / to * to }
