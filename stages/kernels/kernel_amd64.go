//go:build !purego

package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// kern6x16AVX2 computes the 6×16 tile alpha·(Ã·B̃) + beta·C from a packed A
// panel (kc steps of 6 floats) and a packed B panel (kc steps of 16 floats).
// C is read only when beta ≠ 0. ldc is in elements.
//
//go:noescape
func kern6x16AVX2(kc int, a, b, c *float32, ldc int, alpha, beta float32)

// kern6x16RowsAVX2 is kern6x16AVX2 for an A panel stored as 6 rows of kc
// floats with row stride lda (elements).
//
//go:noescape
func kern6x16RowsAVX2(kc int, a *float32, lda int, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func copySteps6AVX(dst, src *float32, ld, kc int)

//go:noescape
func copySteps16AVX(dst, src *float32, ld, kc int)

// copyStepsArch packs kc steps of w ∈ {6, 16} contiguous floats from
// src[off:], rows ld apart, into d, with vector moves; it reports false
// when it cannot (no AVX2, or another width) and the caller copies in Go.
func copyStepsArch(d, src []float32, off, ld, kc, w int) bool {
	if !haveAVX2 || kc == 0 || (w != 6 && w != 16) {
		return false
	}
	if len(d) < kc*w || off < 0 || len(src) < off+(kc-1)*ld+w {
		panic("kernels: packing past the end of a panel (broken invariant)")
	}
	if w == 6 {
		copySteps6AVX(unsafe.SliceData(d), &src[off], ld, kc)
	} else {
		copySteps16AVX(unsafe.SliceData(d), &src[off], ld, kc)
	}
	return true
}

//go:noescape
func interleave6Asm(dst, src *float32, ld, kc int)

// interleave6Arch packs six full rows (see interleave) without Go's bounds
// checks, which made the Go loop three times slower; false when not amd64.
func interleave6Arch(d, src []float32, off, ld, kc int) bool {
	if kc == 0 {
		return true
	}
	if len(d) < kc*6 || off < 0 || len(src) < off+5*ld+kc {
		panic("kernels: packing past the end of a panel (broken invariant)")
	}
	interleave6Asm(unsafe.SliceData(d), &src[off], ld, kc)
	return true
}

//go:noescape
func interleave16Asm(dst, src *float32, ld, groups int)

// interleave16Arch packs sixteen full rows (see interleave) for as many
// whole groups of 8 steps as kc holds, and returns how many steps it did;
// the caller packs the rest.
func interleave16Arch(d, src []float32, off, ld, kc int) int {
	groups := kc / 8
	if !haveAVX2 || groups == 0 {
		return 0
	}
	if len(d) < kc*16 || off < 0 || len(src) < off+15*ld+kc {
		panic("kernels: packing past the end of a panel (broken invariant)")
	}
	interleave16Asm(unsafe.SliceData(d), &src[off], ld, groups)
	return groups * 8
}

// fmaPeakAVX2 runs n iterations of 12 independent 8-wide FMAs (192 flops).
//
//go:noescape
func fmaPeakAVX2(n int)

// haveAVX2 is whether this CPU (and OS) can run the AVX2+FMA micro-kernel.
var haveAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

func kern6x16Asm(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	// The packer guarantees the lengths; these checks keep a broken
	// invariant from turning into a silent out-of-bounds write.
	if len(a) < kc*6 || len(b) < kc*16 || len(c) < 5*ldc+16 {
		panic("kernels: micro-kernel called with short panels (broken invariant)")
	}
	kern6x16AVX2(kc, unsafe.SliceData(a), unsafe.SliceData(b), unsafe.SliceData(c), ldc, alpha, beta)
}

func kern6x16RowsAsm(kc int, a []float32, lda int, b, c []float32, ldc int, alpha, beta float32) {
	if len(a) < 5*lda+kc || len(b) < kc*16 || len(c) < 5*ldc+16 {
		panic("kernels: micro-kernel called with short panels (broken invariant)")
	}
	kern6x16RowsAVX2(kc, unsafe.SliceData(a), lda, unsafe.SliceData(b), unsafe.SliceData(c), ldc, alpha, beta)
}

func init() {
	if haveAVX2 {
		asmKernel = &microKernel{name: "avx2", mr: 6, nr: 16, fn: kern6x16Asm, rows: kern6x16RowsAsm}
		active = asmKernel
	}
}
