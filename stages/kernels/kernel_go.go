package kernels

// microKernel is one register-tile kernel and the tile shape its packed
// panels use. fn computes the mr×nr tile alpha·(Ã·B̃) + beta·C from a packed
// A panel (kc steps of mr floats) and a packed B panel (kc steps of nr
// floats), reading C only when beta ≠ 0; ldc is in elements.
//
// rows, if set, is the same kernel for an A panel stored as mr rows of kc
// floats, row r at a[r*lda:]. Sgemm uses it when A is not transposed: that
// panel is packed with plain row copies instead of a transposing one.
type microKernel struct {
	name   string
	mr, nr int
	fn     func(kc int, a, b, c []float32, ldc int, alpha, beta float32)
	rows   func(kc int, a []float32, lda int, b, c []float32, ldc int, alpha, beta float32)
}

// nc is the column block for this kernel: blockN rounded down to whole
// panels, so only the last block of a matrix has a partial panel.
func (k *microKernel) nc() int { return blockN / k.nr * k.nr }

// goKernel is the portable path: plain Go, 4×4 so its 16 accumulators stay
// in registers on arm64 (32 FP registers) and mostly so on amd64.
var goKernel = &microKernel{name: "go", mr: 4, nr: 4, fn: kern4x4Go}

// asmKernel is the assembly kernel for this CPU, or nil if there is none.
var asmKernel *microKernel

// active is the kernel Sgemm uses. It is chosen once at start-up (the asm
// kernel if the CPU has one) and switched only by tests.
var active = goKernel

func kern4x4Go(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	a = a[:kc*4]
	b = b[:kc*4]
	var c00, c01, c02, c03 float32
	var c10, c11, c12, c13 float32
	var c20, c21, c22, c23 float32
	var c30, c31, c32, c33 float32
	for p := 0; p < kc; p++ {
		ap := a[p*4 : p*4+4 : p*4+4]
		bp := b[p*4 : p*4+4 : p*4+4]
		b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
		a0 := ap[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		a1 := ap[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		a2 := ap[2]
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		a3 := ap[3]
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
	}
	storeRow4(c[0*ldc:0*ldc+4], alpha, beta, c00, c01, c02, c03)
	storeRow4(c[1*ldc:1*ldc+4], alpha, beta, c10, c11, c12, c13)
	storeRow4(c[2*ldc:2*ldc+4], alpha, beta, c20, c21, c22, c23)
	storeRow4(c[3*ldc:3*ldc+4], alpha, beta, c30, c31, c32, c33)
}

func storeRow4(r []float32, alpha, beta float32, v0, v1, v2, v3 float32) {
	r = r[:4]
	if beta == 0 {
		// Overwrite without reading: C may hold NaN garbage.
		r[0], r[1], r[2], r[3] = alpha*v0, alpha*v1, alpha*v2, alpha*v3
		return
	}
	r[0] = alpha*v0 + beta*r[0]
	r[1] = alpha*v1 + beta*r[1]
	r[2] = alpha*v2 + beta*r[2]
	r[3] = alpha*v3 + beta*r[3]
}
