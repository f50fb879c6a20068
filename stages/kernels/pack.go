package kernels

// Packing copies a block of op(A) or op(B) into the layout the micro-kernel
// streams through: contiguous panels, each kc steps of mr (A) or nr (B)
// floats, zero-padded at the edges. The transpose flags are resolved here,
// so one micro-kernel serves all four variants, and the kernel never sees a
// stride or a partial tile in its inputs.

// packA packs rows [ic, ic+mc) and reduction steps [pc, pc+kc) of op(A).
func packA(dst, a []float32, lda int, transA bool, ic, mc, pc, kc, mr int) {
	for i := 0; i < mc; i += mr {
		rows := min(mr, mc-i)
		d := dst[(i/mr)*kc*mr : (i/mr+1)*kc*mr]
		if transA {
			// op(A)(i, p) = a[p*lda + i]: each step is a contiguous run.
			copySteps(d, a, pc*lda+ic+i, lda, rows, kc, mr)
			continue
		}
		// op(A)(i, p) = a[i*lda + p]: read mr rows, interleave them.
		interleave(d, a, (ic+i)*lda+pc, lda, rows, kc, mr)
	}
}

// packB packs reduction steps [pc, pc+kc) and columns [jc, jc+nc) of op(B).
func packB(dst, b []float32, ldb int, transB bool, pc, kc, jc, nc, nr int) {
	for j := 0; j < nc; j += nr {
		cols := min(nr, nc-j)
		d := dst[(j/nr)*kc*nr : (j/nr+1)*kc*nr]
		if !transB {
			// op(B)(p, j) = b[p*ldb + j]: each step is a contiguous run.
			copySteps(d, b, pc*ldb+jc+j, ldb, cols, kc, nr)
			continue
		}
		// op(B)(p, j) = b[j*ldb + p]: read nr rows of B, interleave them.
		interleave(d, b, (jc+j)*ldb+pc, ldb, cols, kc, nr)
	}
}

// packARows packs rows [ic, ic+mc) and steps [pc, pc+kc) of a row-major
// (not transposed) A as panels of mr rows of kc floats each, for a kernel
// with a rows variant. Rows past mc are zero.
func packARows(dst, a []float32, lda, ic, mc, pc, kc, mr int) {
	for i := 0; i < mc; i += mr {
		rows := min(mr, mc-i)
		d := dst[(i/mr)*kc*mr : (i/mr+1)*kc*mr]
		for r := 0; r < rows; r++ {
			src := a[(ic+i+r)*lda+pc:]
			copy(d[r*kc:(r+1)*kc], src[:kc])
		}
		clear(d[rows*kc:])
	}
}

// copySteps writes d[p*w + r] = src[off + p*ld + r] for r < width and
// p < kc, zero for width ≤ r < w: each step of the panel is a contiguous run
// of the source. Full widths of the kernels' sizes are spelled out element
// by element: copy() here would be a memmove call per 24 or 64 bytes.
func copySteps(d, src []float32, off, ld, width, kc, w int) {
	d = d[:kc*w]
	if width == w && copyStepsArch(d, src, off, ld, kc, w) {
		return
	}
	switch {
	case width == 16 && w == 16:
		for p := 0; p < kc; p++ {
			o := off + p*ld
			x := src[o : o+16 : o+16]
			q := d[p*16 : p*16+16 : p*16+16]
			q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7] = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
			q[8], q[9], q[10], q[11], q[12], q[13], q[14], q[15] = x[8], x[9], x[10], x[11], x[12], x[13], x[14], x[15]
		}
	case width == 6 && w == 6:
		for p := 0; p < kc; p++ {
			o := off + p*ld
			x := src[o : o+6 : o+6]
			q := d[p*6 : p*6+6 : p*6+6]
			q[0], q[1], q[2], q[3], q[4], q[5] = x[0], x[1], x[2], x[3], x[4], x[5]
		}
	case width == w && w%4 == 0:
		// 4, and the NEON kernel's 8 and 12.
		for p := 0; p < kc; p++ {
			o := off + p*ld
			x := src[o : o+w : o+w]
			q := d[p*w : p*w+w : p*w+w]
			for i := 0; i+4 <= len(q) && i+4 <= len(x); i += 4 {
				q[i], q[i+1], q[i+2], q[i+3] = x[i], x[i+1], x[i+2], x[i+3]
			}
		}
	default:
		for p := 0; p < kc; p++ {
			dp := d[p*w : p*w+w]
			copy(dp, src[off+p*ld:off+p*ld+width])
			clear(dp[width:])
		}
	}
}

// interleave writes d[p*w + r] = src[off + r*ld + p] for r < rows and
// p < kc, and zeros for rows ≤ r < w: the transposing copy that packing a
// row-major A (or a transposed B) needs. It is the packing hot spot, so
// whole panels of the kernels' widths take loops that read several rows
// at once and write each step's w floats together.
func interleave(d, src []float32, off, ld, rows, kc, w int) {
	d = d[:kc*w]
	if rows == w {
		switch w {
		case 6:
			if !interleave6Arch(d, src, off, ld, kc) {
				interleave6(d, src, off, ld, kc)
			}
			return
		case 4, 8, 12, 16:
			done := 0
			if w == 16 {
				done = interleave16Arch(d, src, off, ld, kc)
			}
			if done < kc {
				for r := 0; r < w; r += 4 {
					interleave4(d[done*w+r:], src, off+done+r*ld, ld, kc-done, w)
				}
			}
			return
		}
	}
	for r := 0; r < rows; r++ {
		row := src[off+r*ld:]
		row = row[:kc]
		for p, v := range row {
			d[p*w+r] = v
		}
	}
	for r := rows; r < w; r++ {
		for p := 0; p < kc; p++ {
			d[p*w+r] = 0
		}
	}
}

func interleave6(d, src []float32, off, ld, kc int) {
	r0 := src[off : off+kc]
	r1 := src[off+ld:]
	r2 := src[off+2*ld:]
	r3 := src[off+3*ld:]
	r4 := src[off+4*ld:]
	r5 := src[off+5*ld:]
	r1, r2, r3, r4, r5 = r1[:len(r0)], r2[:len(r0)], r3[:len(r0)], r4[:len(r0)], r5[:len(r0)]
	for p := range r0 {
		q := d[p*6 : p*6+6 : p*6+6]
		q[0], q[1], q[2], q[3], q[4], q[5] = r0[p], r1[p], r2[p], r3[p], r4[p], r5[p]
	}
}

// interleave4 fills columns 0..3 of each w-wide step of d from 4 rows.
func interleave4(d, src []float32, off, ld, kc, w int) {
	r0 := src[off : off+kc]
	r1 := src[off+ld:]
	r2 := src[off+2*ld:]
	r3 := src[off+3*ld:]
	r1, r2, r3 = r1[:len(r0)], r2[:len(r0)], r3[:len(r0)]
	for p := range r0 {
		q := d[p*w : p*w+4 : p*w+4]
		q[0], q[1], q[2], q[3] = r0[p], r1[p], r2[p], r3[p]
	}
}
