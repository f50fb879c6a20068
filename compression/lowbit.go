package compression

import (
	"fmt"
	"math"
)

// Sub-byte coefficients for the subspace codec (Int6, Int4, Int3, Int2). The subspace
// gap to fp32 comes from the rank k of the constraint far more than from the
// coefficient precision (int8 and fp32 coefficients train alike), so spending
// fewer bits per coefficient buys a larger k at the same bytes per token.
//
// Layout, per message: rows bf16 scales (2 bytes each, one per row), then
// rows×K codes of lowBits(p) bits each, packed LSB-first into one bit stream
// (ceil(rows·K·bits/8) bytes, unused high bits of the last byte zero). A code
// u stores the level u − qmax in [−qmax, qmax] (symmetric: 63 levels for
// int6, 15 for int4, 7 for int3, 3 for int2); the all-ones code is never
// written and is rejected.
//
// Rounding: the forward path (activations) rounds to nearest, the smallest
// error for what the next stage computes on. The backward path (gradients)
// rounds stochastically, so the decoded gradient is unbiased — E[ĝ] = U·Uᵀg —
// and the upstream optimizer sees no systematic shrinkage of small
// components, which nearest rounding to 15 levels would cause.
//
// Error bound per coefficient, with amax the row's largest |c| and
// s = bf16ceil(amax/qmax) ≤ amax/qmax·(1+2⁻⁷): nearest |ĉ−c| ≤ s/2;
// stochastic |ĉ−c| < s and E[ĉ] = c.

// lowBits is the width of one code in precision p (0 when p is not sub-byte).
func lowBits(p Precision) int {
	switch p {
	case Int4:
		return 4
	case Int6:
		return 6
	case Int3:
		return 3
	case Int2:
		return 2
	}
	return 0
}

// lowQMax is the largest level magnitude of a b-bit code.
func lowQMax(b int) int { return 1<<(b-1) - 1 }

// lowCodeBytes is the packed size of n codes of b bits.
func lowCodeBytes(n, b int) int { return (n*b + 7) / 8 }

// bf16Ceil rounds a positive finite float32 up to the nearest bfloat16 and
// returns its 16 bits: the scale may only grow, so |c|/scale ≤ qmax holds and
// no level clips.
func bf16Ceil(v float32) uint16 {
	b := math.Float32bits(v)
	if b&0xffff != 0 {
		b += 0x10000 // cannot reach Inf: callers pass amax/qmax ≤ MaxFloat32/7
	}
	return uint16(b >> 16)
}

func bf16Value(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// lowScaleLimit bounds scale·qmax·k: the largest |value| Basis.Expand can
// then produce (|U| ≤ 1) stays far from float32 overflow, so a decoded
// payload never yields Inf or NaN, and an honest encoder never gets near it.
const lowScaleLimit = 1e30

// lowScaleOK reports whether sc is a usable row scale: non-negative, finite,
// and small enough that no coefficient sum can overflow.
func lowScaleOK(sc float32, q, k int) bool {
	return sc >= 0 && !math.Signbit(float64(sc)) && float64(sc)*float64(q)*float64(k) <= lowScaleLimit
}

// appendLowBit appends the scales and packed codes of c (rows×k). stoch
// selects stochastic rounding with random bits from g.
func appendLowBit(dst []byte, c []float32, rows, k, bits int, stoch bool, g *rng) ([]byte, error) {
	q := lowQMax(bits)
	qf := float32(q)
	dst, w := grow(dst, 2*rows+lowCodeBytes(rows*k, bits))
	scales, codes := w[:2*rows], w[2*rows:]
	clear(codes)
	var acc uint64 // bit accumulator, filled LSB-first
	nacc, pos := 0, 0
	var rbits uint64 // random bits for stochastic rounding
	nr := 0
	for i := 0; i < rows; i++ {
		row := c[i*k : (i+1)*k]
		var amax float32
		for _, v := range row {
			amax = max(amax, abs32(v))
		}
		if !(amax <= math.MaxFloat32) {
			return dst[:len(dst)-len(w)], fmt.Errorf("subspace: encode: row %d: %w", i, ErrNonFinite)
		}
		h := bf16Ceil(amax / qf)
		sc := bf16Value(h)
		if !lowScaleOK(sc, q, k) {
			return dst[:len(dst)-len(w)], fmt.Errorf("subspace: encode: row %d: |c| up to %g: %w (int%d coefficients need |c|·k ≤ %g)", i, amax, ErrNonFinite, bits, lowScaleLimit)
		}
		scales[2*i], scales[2*i+1] = byte(h), byte(h>>8)
		var inv float64
		if sc > 0 {
			inv = 1 / float64(sc)
		}
		for _, v := range row {
			y := float64(v) * inv // |y| ≤ q (+ a rounding hair)
			var l float64
			if stoch {
				if nr == 0 {
					rbits, nr = g.next(), 2
				}
				u := float64(uint32(rbits)) * (1.0 / (1 << 32))
				rbits >>= 32
				nr--
				l = math.Floor(y + u)
			} else {
				l = math.RoundToEven(y)
			}
			l = max(-float64(q), min(float64(q), l))
			acc |= uint64(int(l)+q) << nacc
			nacc += bits
			for nacc >= 8 {
				codes[pos] = byte(acc)
				pos++
				acc >>= 8
				nacc -= 8
			}
		}
	}
	if nacc > 0 {
		codes[pos] = byte(acc)
	}
	return dst, nil
}

// readLowBit reads rows×k coefficients in precision p into c, validating
// every scale, every code and the zero padding.
func readLowBit(r *reader, c []float32, rows, k, bits int) error {
	q := lowQMax(bits)
	scales := r.take(2*rows, "row scales")
	codes := r.take(lowCodeBytes(rows*k, bits), "packed coefficients")
	if err := r.done(); err != nil {
		return err
	}
	mask := uint64(1)<<bits - 1
	var acc uint64
	nacc, pos := 0, 0
	for i := 0; i < rows; i++ {
		sc := bf16Value(uint16(scales[2*i]) | uint16(scales[2*i+1])<<8)
		if !lowScaleOK(sc, q, k) {
			return fmt.Errorf("%w: row %d scale %v (want 0 ≤ scale·qmax·k ≤ %g)", ErrCorrupt, i, sc, lowScaleLimit)
		}
		for j := 0; j < k; j++ {
			for nacc < bits {
				acc |= uint64(codes[pos]) << nacc
				pos++
				nacc += 8
			}
			u := int(acc & mask)
			acc >>= bits
			nacc -= bits
			if u > 2*q {
				return fmt.Errorf("%w: row %d coefficient %d: code %d outside 0..%d", ErrCorrupt, i, j, u, 2*q)
			}
			c[i*k+j] = float32(u-q) * sc
		}
	}
	if acc != 0 {
		return fmt.Errorf("%w: nonzero padding bits after the last int%d code", ErrCorrupt, bits)
	}
	return nil
}
