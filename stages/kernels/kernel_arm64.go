//go:build !purego

package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// kern8x12NEON writes the 8×12 tile of sums Ã·B̃ from a packed A panel (kc
// steps of 8 floats) and a packed B panel (kc steps of 12 floats) to t,
// row-major and contiguous.
//
//go:noescape
func kern8x12NEON(kc int, a, b, t *float32)

func kern8x12Asm(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	if len(a) < kc*8 || len(b) < kc*12 || len(c) < 7*ldc+12 {
		panic("kernels: micro-kernel called with short panels (broken invariant)")
	}
	var t [8 * 12]float32
	kern8x12NEON(kc, unsafe.SliceData(a), unsafe.SliceData(b), &t[0])
	// alpha and beta are applied here rather than in assembly: Go's arm64
	// assembler has no vector multiply, and this pass is ~3% of a kc=256
	// tile's work.
	for r := 0; r < 8; r++ {
		row := c[r*ldc : r*ldc+12]
		tr := t[r*12 : r*12+12]
		if beta == 0 {
			for j := range row {
				row[j] = alpha * tr[j]
			}
			continue
		}
		for j := range row {
			row[j] = alpha*tr[j] + beta*row[j]
		}
	}
}

func init() {
	if cpu.ARM64.HasASIMD {
		asmKernel = &microKernel{name: "neon", mr: 8, nr: 12, fn: kern8x12Asm}
		active = asmKernel
	}
}
