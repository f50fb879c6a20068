//go:build !purego

#include "textflag.h"

// One k step of the 8×12 NEON micro-kernel: three B vectors (12 floats),
// then each of the 8 A values of the step replicated into a vector (LD1R
// uses a load port, not a vector pipe) and multiplied into the row's three
// accumulators. Row r accumulates in V(3r), V(3r+1), V(3r+2).
#define ROW(va, c0, c1, c2) \
	VLD1R.P 4(R0), [va.S4] \
	VFMLA V24.S4, va.S4, c0.S4 \
	VFMLA V25.S4, va.S4, c1.S4 \
	VFMLA V26.S4, va.S4, c2.S4

// func kern8x12NEON(kc int, a, b, t *float32)
// t receives the 8×12 tile of sums, row-major and contiguous; the caller
// applies alpha and beta.
TEXT ·kern8x12NEON(SB), NOSPLIT, $0-32
	MOVD kc+0(FP), R3
	MOVD a+8(FP), R0
	MOVD b+16(FP), R1
	MOVD t+24(FP), R2

	VEOR V0.B16, V0.B16, V0.B16
	VEOR V1.B16, V1.B16, V1.B16
	VEOR V2.B16, V2.B16, V2.B16
	VEOR V3.B16, V3.B16, V3.B16
	VEOR V4.B16, V4.B16, V4.B16
	VEOR V5.B16, V5.B16, V5.B16
	VEOR V6.B16, V6.B16, V6.B16
	VEOR V7.B16, V7.B16, V7.B16
	VEOR V8.B16, V8.B16, V8.B16
	VEOR V9.B16, V9.B16, V9.B16
	VEOR V10.B16, V10.B16, V10.B16
	VEOR V11.B16, V11.B16, V11.B16
	VEOR V12.B16, V12.B16, V12.B16
	VEOR V13.B16, V13.B16, V13.B16
	VEOR V14.B16, V14.B16, V14.B16
	VEOR V15.B16, V15.B16, V15.B16
	VEOR V16.B16, V16.B16, V16.B16
	VEOR V17.B16, V17.B16, V17.B16
	VEOR V18.B16, V18.B16, V18.B16
	VEOR V19.B16, V19.B16, V19.B16
	VEOR V20.B16, V20.B16, V20.B16
	VEOR V21.B16, V21.B16, V21.B16
	VEOR V22.B16, V22.B16, V22.B16
	VEOR V23.B16, V23.B16, V23.B16

	CBZ R3, store

loop:
	VLD1.P 48(R1), [V24.S4, V25.S4, V26.S4]
	ROW(V27, V0, V1, V2)
	ROW(V28, V3, V4, V5)
	ROW(V29, V6, V7, V8)
	ROW(V30, V9, V10, V11)
	ROW(V31, V12, V13, V14)
	ROW(V27, V15, V16, V17)
	ROW(V28, V18, V19, V20)
	ROW(V29, V21, V22, V23)
	SUBS $1, R3, R3
	BNE  loop

store:
	VST1.P [V0.S4, V1.S4, V2.S4, V3.S4], 64(R2)
	VST1.P [V4.S4, V5.S4, V6.S4, V7.S4], 64(R2)
	VST1.P [V8.S4, V9.S4, V10.S4, V11.S4], 64(R2)
	VST1.P [V12.S4, V13.S4, V14.S4, V15.S4], 64(R2)
	VST1.P [V16.S4, V17.S4, V18.S4, V19.S4], 64(R2)
	VST1.P [V20.S4, V21.S4, V22.S4, V23.S4], 64(R2)
	RET
