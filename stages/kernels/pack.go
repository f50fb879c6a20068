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
			for p := 0; p < kc; p++ {
				src := a[(pc+p)*lda+ic+i:]
				dp := d[p*mr : p*mr+mr]
				copy(dp, src[:rows])
				clear(dp[rows:])
			}
			continue
		}
		// op(A)(i, p) = a[i*lda + p]: read mr rows, interleave them.
		for r := 0; r < rows; r++ {
			src := a[(ic+i+r)*lda+pc:]
			src = src[:kc]
			for p, v := range src {
				d[p*mr+r] = v
			}
		}
		for r := rows; r < mr; r++ {
			for p := 0; p < kc; p++ {
				d[p*mr+r] = 0
			}
		}
	}
}

// packB packs reduction steps [pc, pc+kc) and columns [jc, jc+nc) of op(B).
func packB(dst, b []float32, ldb int, transB bool, pc, kc, jc, nc, nr int) {
	for j := 0; j < nc; j += nr {
		cols := min(nr, nc-j)
		d := dst[(j/nr)*kc*nr : (j/nr+1)*kc*nr]
		if !transB {
			// op(B)(p, j) = b[p*ldb + j]: each step is a contiguous run.
			for p := 0; p < kc; p++ {
				src := b[(pc+p)*ldb+jc+j:]
				dp := d[p*nr : p*nr+nr]
				copy(dp, src[:cols])
				clear(dp[cols:])
			}
			continue
		}
		// op(B)(p, j) = b[j*ldb + p]: read nr rows of B, interleave them.
		for r := 0; r < cols; r++ {
			src := b[(jc+j+r)*ldb+pc:]
			src = src[:kc]
			for p, v := range src {
				d[p*nr+r] = v
			}
		}
		for r := cols; r < nr; r++ {
			for p := 0; p < kc; p++ {
				d[p*nr+r] = 0
			}
		}
	}
}
