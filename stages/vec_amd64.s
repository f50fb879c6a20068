//go:build !purego

#include "textflag.h"

// Vector versions of the elementwise layers (AVX2 + FMA, 8 floats per
// step). Constants come in a table of 8-float rows (vecConsts in
// vec_amd64.go) so every FMA can take one straight from memory. Callers
// pass n as a multiple of 8 and handle the tail in Go.

// Offsets of vecConsts rows (32 bytes each).
#define C_S      0     // sqrt(2/π)
#define C_K      32    // 0.044715
#define C_CLAMP  64
#define C_NCLAMP 96
#define C_A13    128
#define C_A11    160
#define C_A9     192
#define C_A7     224
#define C_A5     256
#define C_A3     288
#define C_A1     320
#define C_B6     352
#define C_B4     384
#define C_B2     416
#define C_B0     448
#define C_HALF   480
#define C_ONE    512
#define C_K3     544   // 3·0.044715
#define C_E127   576   // int32 127
#define C_EHI    608   // 88
#define C_ELO    640   // −87
#define C_LOG2E  672
#define C_LN2HI  704
#define C_LN2LO  736
#define C_P0     768   // expf polynomial, highest degree first
#define C_P1     800
#define C_P2     832
#define C_P3     864
#define C_P4     896
#define C_P5     928

// func geluFwdAVX2(out, inp *float32, n int, c *[vecRows][8]float32)
TEXT ·geluFwdAVX2(SB), NOSPLIT, $0-32
	MOVQ out+0(FP), DI
	MOVQ inp+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ c+24(FP), R8
	SHRQ $3, CX
	JZ   fdone

floop:
	// The same operations in the same order as geluForwardRef (no fused
	// multiply-adds), so the vector results equal the Go loop's bit for
	// bit: tanh then saturates to exactly ±1 as it does there, which the
	// backward pass relies on to recover tanh from the output.
	VMOVUPS (SI), Y0                  // v
	VMULPS  C_K(R8), Y0, Y1           // 0.044715·v
	VMULPS  Y0, Y1, Y1
	VMULPS  Y0, Y1, Y1                // 0.044715·v³
	VADDPS  Y0, Y1, Y1
	VMULPS  C_S(R8), Y1, Y2           // u = s·(v + 0.044715·v³)
	VMINPS  C_CLAMP(R8), Y2, Y2
	VMAXPS  C_NCLAMP(R8), Y2, Y2
	VMULPS  Y2, Y2, Y3                // u²
	VMULPS  C_A13(R8), Y3, Y4
	VADDPS  C_A11(R8), Y4, Y4         // p = u²·p + a
	VMULPS  Y3, Y4, Y4
	VADDPS  C_A9(R8), Y4, Y4
	VMULPS  Y3, Y4, Y4
	VADDPS  C_A7(R8), Y4, Y4
	VMULPS  Y3, Y4, Y4
	VADDPS  C_A5(R8), Y4, Y4
	VMULPS  Y3, Y4, Y4
	VADDPS  C_A3(R8), Y4, Y4
	VMULPS  Y3, Y4, Y4
	VADDPS  C_A1(R8), Y4, Y4
	VMULPS  C_B6(R8), Y3, Y5
	VADDPS  C_B4(R8), Y5, Y5          // q = u²·q + b
	VMULPS  Y3, Y5, Y5
	VADDPS  C_B2(R8), Y5, Y5
	VMULPS  Y3, Y5, Y5
	VADDPS  C_B0(R8), Y5, Y5
	VMULPS  Y4, Y2, Y4                // u·p
	VDIVPS  Y5, Y4, Y4                // tanh(u) = u·p/q
	VADDPS  C_ONE(R8), Y4, Y4         // 1 + tanh
	VMULPS  C_HALF(R8), Y0, Y6        // v/2
	VMULPS  Y4, Y6, Y4                // v/2·(1 + tanh)
	VMOVUPS Y4, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ  floop

fdone:
	VZEROUPPER
	RET

// func geluBwdAVX2(dinp, inp, fwd, dout *float32, n int, c *[vecRows][8]float32)
TEXT ·geluBwdAVX2(SB), NOSPLIT, $0-48
	MOVQ dinp+0(FP), DI
	MOVQ inp+8(FP), SI
	MOVQ fwd+16(FP), DX
	MOVQ dout+24(FP), BX
	MOVQ n+32(FP), CX
	MOVQ c+40(FP), R8
	SHRQ $3, CX
	JZ   bdone
	VXORPS Y7, Y7, Y7

bloop:
	// geluBackwardRef's operations in its order (no fused multiply-adds).
	VMOVUPS (SI), Y0                  // v
	VMOVUPS (DX), Y1                  // g = gelu(v)
	VADDPS  Y1, Y1, Y1                // 2g
	VDIVPS  Y0, Y1, Y1                // 2g/v
	VSUBPS  C_ONE(R8), Y1, Y1         // th = 2g/v − 1
	VCMPPS  $4, Y7, Y0, Y8            // v ≠ 0 (true for NaN, as in Go)
	VANDPS  Y8, Y1, Y1                // th = 0 where v = 0
	VMULPS  Y1, Y1, Y2
	VMOVUPS C_ONE(R8), Y3
	VSUBPS  Y2, Y3, Y2                // sech² = 1 − th²
	VMULPS  C_HALF(R8), Y0, Y5        // v/2
	VMULPS  Y2, Y5, Y5                // ·sech²
	VMULPS  C_S(R8), Y5, Y5           // ·s
	VMULPS  C_K3(R8), Y0, Y4          // 3·0.044715·v
	VMULPS  Y0, Y4, Y4                // ·v
	VADDPS  C_ONE(R8), Y4, Y4         // 1 + …
	VMULPS  Y4, Y5, Y5
	VADDPS  C_ONE(R8), Y1, Y1         // 1 + th
	VMULPS  C_HALF(R8), Y1, Y1        // (1 + th)/2
	VADDPS  Y5, Y1, Y1
	VMULPS  (BX), Y1, Y1              // · dout
	VMOVUPS Y1, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, BX
	ADDQ $32, DI
	DECQ CX
	JNZ  bloop

bdone:
	VZEROUPPER
	RET

// func maxAVX2(x *float32, n int) float32
// n ≥ 8 and a multiple of 8.
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	SHRQ $3, CX
	VMOVUPS (SI), Y0
	ADDQ $32, SI
	DECQ CX
	JZ   mred

mloop:
	VMAXPS (SI), Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ  mloop

mred:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+16(FP)
	RET

// func expSubSumAVX2(x *float32, n int, m float32, c *[vecRows][8]float32) float32
// x[i] = e^(x[i] − m) in place for n (a multiple of 8) entries; returns
// the sum. The exponential is expf's Cephes reduction and polynomial with
// fused multiply-adds; arguments below −87 give 0 (e^−87 ≈ 1.6e−38).
TEXT ·expSubSumAVX2(SB), NOSPLIT, $0-36
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Y15
	MOVQ c+24(FP), R8
	VXORPS Y14, Y14, Y14              // sum
	SHRQ $3, CX
	JZ   edone
	VMOVUPS C_E127(R8), Y13           // 127 as int32
	VMOVUPS C_EHI(R8), Y11
	VMOVUPS C_ELO(R8), Y12

eloop:
	VMOVUPS (SI), Y0
	VSUBPS  Y15, Y0, Y0               // x − m
	VCMPPS  $5, Y12, Y0, Y8           // keep where !(x < −87): NaN stays NaN
	VMINPS  Y0, Y11, Y0               // ≤ 88 (a NaN x passes through)
	VMAXPS  Y0, Y12, Y0               // ≥ −87
	VMULPS  C_LOG2E(R8), Y0, Y1
	VCVTPS2DQ Y1, Y2                  // n = round(x·log2 e)
	VCVTDQ2PS Y2, Y1
	VFNMADD231PS C_LN2HI(R8), Y1, Y0  // r = x − n·ln2hi
	VFNMADD231PS C_LN2LO(R8), Y1, Y0  //     − n·ln2lo
	VMULPS  Y0, Y0, Y3                // z = r²
	VMOVUPS C_P0(R8), Y4
	VFMADD213PS C_P1(R8), Y0, Y4
	VFMADD213PS C_P2(R8), Y0, Y4
	VFMADD213PS C_P3(R8), Y0, Y4
	VFMADD213PS C_P4(R8), Y0, Y4
	VFMADD213PS C_P5(R8), Y0, Y4
	VFMADD213PS Y0, Y3, Y4            // p·z + r
	VADDPS  C_ONE(R8), Y4, Y4         // + 1
	VPADDD  Y13, Y2, Y2
	VPSLLD  $23, Y2, Y2               // 2^n
	VMULPS  Y2, Y4, Y4
	VANDPS  Y8, Y4, Y4
	VADDPS  Y4, Y14, Y14
	VMOVUPS Y4, (SI)
	ADDQ $32, SI
	DECQ CX
	JNZ  eloop

edone:
	VEXTRACTF128 $1, Y14, X1
	VADDPS X1, X14, X0
	VPERMILPS $0x4e, X0, X1
	VADDPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VADDPS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func scaleAVX2(x *float32, n int, s float32)
// x[i] *= s for n (a multiple of 8) entries.
TEXT ·scaleAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS s+16(FP), Y1
	SHRQ $3, CX
	JZ   sdone

sloop:
	VMULPS (SI), Y1, Y0
	VMOVUPS Y0, (SI)
	ADDQ $32, SI
	DECQ CX
	JNZ  sloop

sdone:
	VZEROUPPER
	RET

// func addAVX2(dst, src *float32, n int)
// dst[i] += src[i] for n (a multiple of 8) entries.
TEXT ·addAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ   adone

aloop:
	VMOVUPS (DI), Y0
	VADDPS  (SI), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ  aloop

adone:
	VZEROUPPER
	RET

// func add2AVX2(dst, a, b *float32, n int)
// dst[i] += a[i] + b[i] (that order: the sum a + b first, as the Go loop).
TEXT ·add2AVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $3, CX
	JZ   a2done

a2loop:
	VMOVUPS (SI), Y0
	VADDPS  (DX), Y0, Y0
	VADDPS  (DI), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ  a2loop

a2done:
	VZEROUPPER
	RET

// func adamAVX2(w, gr, m, v *float32, n int, p *[adamRows][8]float32)
// One AdamW update of n (a multiple of 8) entries, with adamJob.run's
// operations in its order (no fused multiply-adds), so the results equal
// the Go loop's. p rows: b1, 1−b1, b2, 1−b2, bc2, eps, decay, step.
TEXT ·adamAVX2(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), DI
	MOVQ gr+8(FP), SI
	MOVQ m+16(FP), DX
	MOVQ v+24(FP), BX
	MOVQ n+32(FP), CX
	MOVQ p+40(FP), R8
	SHRQ $3, CX
	JZ   addone

adloop:
	VMOVUPS (SI), Y0                  // g
	VMOVUPS (DX), Y1
	VMULPS  (R8), Y1, Y1              // b1·m
	VMULPS  32(R8), Y0, Y2            // (1−b1)·g
	VADDPS  Y2, Y1, Y1                // m
	VMOVUPS Y1, (DX)
	VMOVUPS (BX), Y3
	VMULPS  64(R8), Y3, Y3            // b2·v
	VMULPS  96(R8), Y0, Y4            // (1−b2)·g
	VMULPS  Y0, Y4, Y4                // ·g
	VADDPS  Y4, Y3, Y3                // v
	VMOVUPS Y3, (BX)
	VSQRTPS Y3, Y3
	VDIVPS  128(R8), Y3, Y3           // √v / bc2
	VADDPS  160(R8), Y3, Y3           // + eps
	VMOVUPS (DI), Y5
	VMULPS  192(R8), Y5, Y5           // w·decay
	VMULPS  224(R8), Y1, Y1           // step·m
	VDIVPS  Y3, Y1, Y1                // /denom
	VSUBPS  Y1, Y5, Y5
	VMOVUPS Y5, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, BX
	ADDQ $32, DI
	DECQ CX
	JNZ  adloop

addone:
	VZEROUPPER
	RET

// Horizontal sum of Y0 into X0 (clobbers X1).
#define HSUM \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS X1, X0, X0 \
	VPERMILPS $0x4e, X0, X1 \
	VADDPS X1, X0, X0 \
	VPERMILPS $0xb1, X0, X1 \
	VADDPS X1, X0, X0

// func sumAVX2(x *float32, n int) float32
TEXT ·sumAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VXORPS Y0, Y0, Y0
	SHRQ $3, CX
	JZ   sudone

suloop:
	VADDPS (SI), Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ  suloop

sudone:
	HSUM
	VZEROUPPER
	MOVSS X0, ret+16(FP)
	RET

// func sumSqDevAVX2(x *float32, n int, m float32) float32
// Σ (x[i] − m)².
TEXT ·sumSqDevAVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Y2
	VXORPS Y0, Y0, Y0
	SHRQ $3, CX
	JZ   sqdone

sqloop:
	VMOVUPS (SI), Y1
	VSUBPS  Y2, Y1, Y1
	VMULPS  Y1, Y1, Y1
	VADDPS  Y1, Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ  sqloop

sqdone:
	HSUM
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func lnApplyAVX2(out, x, w, b *float32, n int, m, s float32)
// out = (x − m)·s·w + b (b may be nil: then no add).
TEXT ·lnApplyAVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ w+16(FP), DX
	MOVQ b+24(FP), BX
	MOVQ n+32(FP), CX
	VBROADCASTSS m+40(FP), Y2
	VBROADCASTSS s+44(FP), Y3
	SHRQ $3, CX
	JZ   lndone
	TESTQ BX, BX
	JZ   lnnob

lnloop:
	VMOVUPS (SI), Y0
	VSUBPS  Y2, Y0, Y0
	VMULPS  Y3, Y0, Y0
	VMULPS  (DX), Y0, Y0
	VADDPS  (BX), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, BX
	ADDQ $32, DI
	DECQ CX
	JNZ  lnloop
	JMP  lndone

lnnob:
	VMOVUPS (SI), Y0
	VSUBPS  Y2, Y0, Y0
	VMULPS  Y3, Y0, Y0
	VMULPS  (DX), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ  lnnob

lndone:
	VZEROUPPER
	RET

// func lnBwdDotsAVX2(x, d, w *float32, n int, m, s float32) (dmean, dnorm float32)
// Σ w·d and Σ w·d·(x − m)·s.
TEXT ·lnBwdDotsAVX2(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), SI
	MOVQ d+8(FP), DX
	MOVQ w+16(FP), BX
	MOVQ n+24(FP), CX
	VBROADCASTSS m+32(FP), Y2
	VBROADCASTSS s+36(FP), Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	SHRQ $3, CX
	JZ   lddone

ldloop:
	VMOVUPS (BX), Y0
	VMULPS  (DX), Y0, Y0              // w·d
	VADDPS  Y0, Y4, Y4
	VMOVUPS (SI), Y1
	VSUBPS  Y2, Y1, Y1
	VMULPS  Y1, Y0, Y0                // w·d·(x − m)
	VMULPS  Y3, Y0, Y0                // ·s
	VADDPS  Y0, Y5, Y5
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, BX
	DECQ CX
	JNZ  ldloop

lddone:
	VMOVAPS Y4, Y0
	HSUM
	MOVSS X0, dmean+40(FP)
	VMOVAPS Y5, Y0
	HSUM
	MOVSS X0, dnorm+44(FP)
	VZEROUPPER
	RET

// func lnBwdApplyAVX2(di, x, d, w *float32, n int, m, s, dmean, dnorm float32)
// di += (w·d − dmean − (x − m)·s·dnorm)·s.
TEXT ·lnBwdApplyAVX2(SB), NOSPLIT, $0-56
	MOVQ di+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ d+16(FP), DX
	MOVQ w+24(FP), BX
	MOVQ n+32(FP), CX
	VBROADCASTSS m+40(FP), Y2
	VBROADCASTSS s+44(FP), Y3
	VBROADCASTSS dmean+48(FP), Y4
	VBROADCASTSS dnorm+52(FP), Y5
	SHRQ $3, CX
	JZ   labdone

labloop:
	VMOVUPS (SI), Y1
	VSUBPS  Y2, Y1, Y1
	VMULPS  Y3, Y1, Y1                // norm
	VMULPS  Y5, Y1, Y1                // norm·dnorm
	VMOVUPS (BX), Y0
	VMULPS  (DX), Y0, Y0              // w·d
	VSUBPS  Y4, Y0, Y0                // − dmean
	VSUBPS  Y1, Y0, Y0                // − norm·dnorm
	VMULPS  Y3, Y0, Y0                // ·s
	VADDPS  (DI), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, BX
	ADDQ $32, DI
	DECQ CX
	JNZ  labloop

labdone:
	VZEROUPPER
	RET

// func lnDwAVX2(dw, x, d *float32, n int, m, s float32)
// dw += (x − m)·s·d.
TEXT ·lnDwAVX2(SB), NOSPLIT, $0-40
	MOVQ dw+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ d+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS m+32(FP), Y2
	VBROADCASTSS s+36(FP), Y3
	SHRQ $3, CX
	JZ   dwdone

dwloop:
	VMOVUPS (SI), Y0
	VSUBPS  Y2, Y0, Y0
	VMULPS  Y3, Y0, Y0
	VMULPS  (DX), Y0, Y0
	VADDPS  (DI), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ  dwloop

dwdone:
	VZEROUPPER
	RET

// func swigluFwdAVX2(out, gate, up *float32, n int, c *[vecRows][8]float32)
// out = g/(1 + e^−g)·u for n (a multiple of 8) entries.
TEXT ·swigluFwdAVX2(SB), NOSPLIT, $0-40
	MOVQ out+0(FP), DI
	MOVQ gate+8(FP), SI
	MOVQ up+16(FP), DX
	MOVQ n+24(FP), CX
	MOVQ c+32(FP), R8
	SHRQ $3, CX
	JZ   swfdone
	VXORPS  Y15, Y15, Y15
	VMOVUPS C_E127(R8), Y13
	VMOVUPS C_EHI(R8), Y11
	VMOVUPS C_ELO(R8), Y12

swfloop:
	VMOVUPS (SI), Y0
	// e^−g by expf's Cephes reduction and polynomial, −g clamped to
	// [−87, 88] so the result is finite and > 0 (enough for a sigmoid)
	VSUBPS  Y0, Y15, Y5
	VMINPS  Y5, Y11, Y5
	VMAXPS  Y5, Y12, Y5
	VMULPS  C_LOG2E(R8), Y5, Y1
	VCVTPS2DQ Y1, Y2
	VCVTDQ2PS Y2, Y1
	VFNMADD231PS C_LN2HI(R8), Y1, Y5
	VFNMADD231PS C_LN2LO(R8), Y1, Y5
	VMULPS  Y5, Y5, Y3
	VMOVUPS C_P0(R8), Y4
	VFMADD213PS C_P1(R8), Y5, Y4
	VFMADD213PS C_P2(R8), Y5, Y4
	VFMADD213PS C_P3(R8), Y5, Y4
	VFMADD213PS C_P4(R8), Y5, Y4
	VFMADD213PS C_P5(R8), Y5, Y4
	VFMADD213PS Y5, Y3, Y4
	VADDPS  C_ONE(R8), Y4, Y4
	VPADDD  Y13, Y2, Y2
	VPSLLD  $23, Y2, Y2
	VMULPS  Y2, Y4, Y4
	VADDPS  C_ONE(R8), Y4, Y4         // 1 + e^−g
	VDIVPS  Y4, Y0, Y6                // g/(1 + e^−g)
	VMULPS  (DX), Y6, Y6              // ·u
	VMOVUPS Y6, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ  swfloop

swfdone:
	VZEROUPPER
	RET

// func swigluBwdAVX2(dg, du, dout, gate, up *float32, n int, c *[vecRows][8]float32)
// With s = 1/(1 + e^−g): du = dout·g·s, dg = dout·u·s·(1 + g·(1 − s)),
// in swigluRowBackward's order, for n (a multiple of 8) entries.
TEXT ·swigluBwdAVX2(SB), NOSPLIT, $0-56
	MOVQ dg+0(FP), DI
	MOVQ du+8(FP), R9
	MOVQ dout+16(FP), R10
	MOVQ gate+24(FP), SI
	MOVQ up+32(FP), DX
	MOVQ n+40(FP), CX
	MOVQ c+48(FP), R8
	SHRQ $3, CX
	JZ   swbdone
	VXORPS  Y15, Y15, Y15
	VMOVUPS C_E127(R8), Y13
	VMOVUPS C_EHI(R8), Y11
	VMOVUPS C_ELO(R8), Y12
	VMOVUPS C_ONE(R8), Y14

swbloop:
	VMOVUPS (SI), Y0
	// e^−g by expf's Cephes reduction and polynomial, −g clamped to
	// [−87, 88] so the result is finite and > 0 (enough for a sigmoid)
	VSUBPS  Y0, Y15, Y5
	VMINPS  Y5, Y11, Y5
	VMAXPS  Y5, Y12, Y5
	VMULPS  C_LOG2E(R8), Y5, Y1
	VCVTPS2DQ Y1, Y2
	VCVTDQ2PS Y2, Y1
	VFNMADD231PS C_LN2HI(R8), Y1, Y5
	VFNMADD231PS C_LN2LO(R8), Y1, Y5
	VMULPS  Y5, Y5, Y3
	VMOVUPS C_P0(R8), Y4
	VFMADD213PS C_P1(R8), Y5, Y4
	VFMADD213PS C_P2(R8), Y5, Y4
	VFMADD213PS C_P3(R8), Y5, Y4
	VFMADD213PS C_P4(R8), Y5, Y4
	VFMADD213PS C_P5(R8), Y5, Y4
	VFMADD213PS Y5, Y3, Y4
	VADDPS  C_ONE(R8), Y4, Y4
	VPADDD  Y13, Y2, Y2
	VPSLLD  $23, Y2, Y2
	VMULPS  Y2, Y4, Y4
	VADDPS  Y14, Y4, Y4               // 1 + e^−g
	VDIVPS  Y4, Y14, Y6               // s
	VMOVUPS (R10), Y7                 // dout
	VMULPS  Y0, Y7, Y8                // dout·g
	VMULPS  Y6, Y8, Y8                // ·s
	VMOVUPS Y8, (R9)                  // du
	VMULPS  (DX), Y7, Y8              // dout·u
	VMULPS  Y6, Y8, Y8                // ·s
	VSUBPS  Y6, Y14, Y9               // 1 − s
	VMULPS  Y9, Y0, Y9                // g·(1 − s)
	VADDPS  Y14, Y9, Y9               // 1 + g·(1 − s)
	VMULPS  Y9, Y8, Y8
	VMOVUPS Y8, (DI)                  // dg
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	ADDQ $32, R9
	ADDQ $32, R10
	DECQ CX
	JNZ  swbloop

swbdone:
	VZEROUPPER
	RET
