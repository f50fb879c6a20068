package compression

import "math"

// F32ToF16 converts to IEEE 754 binary16 with round-to-nearest-even.
// Overflow gives ±Inf, tiny values become subnormal or ±0, NaN stays NaN
// (quiet), as hardware conversion does.
func F32ToF16(f float32) uint16 {
	// Fast path, small enough to inline: results in the fp16 normal range
	// (float32 exponent 113..142), with branch-free rounding (F. Giesen's
	// float_to_half RTNE): rebias, add just under half an fp16 ulp plus
	// the lowest kept bit (ties to even), truncate. A carry out of the
	// mantissa bumps the exponent, up to Inf: correct.
	b := math.Float32bits(f)
	if a := b &^ (1 << 31); a-113<<23 < 30<<23 {
		a = a - (127-15)<<23 + 0xfff + (a>>13)&1
		return uint16(b>>16)&0x8000 | uint16(a>>13)
	}
	return f32ToF16Slow(f)
}

// f32ToF16Slow handles every input; F32ToF16 sends it what is not normal.
func f32ToF16Slow(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half: value = m16 · 2^-24. Below half the smallest
		// subnormal (2^-25) everything rounds to zero.
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		half := m >> shift
		rem := m & (1<<shift - 1)
		halfway := uint32(1) << (shift - 1)
		if rem > halfway || (rem == halfway && half&1 == 1) {
			half++ // may carry into the exponent: the smallest normal, correct
		}
		return sign | uint16(half)
	}
	// Normal range (reached only when called directly), as the fast path.
	a := b &^ (1 << 31)
	a = a - (127-15)<<23 + 0xfff + (a>>13)&1
	return sign | uint16(a>>13)
}

// F16ToF32 converts an IEEE binary16 value to float32 exactly.
func F16ToF32(h uint16) float32 {
	if e := uint32(h>>10) & 0x1f; e-1 < 30 { // normal: inlinable fast path
		return math.Float32frombits(uint32(h&0x8000)<<16 | (uint32(h&0x7fff)<<13 + (127-15)<<23))
	}
	return f16ToF32Slow(h)
}

// f16ToF32Slow handles every input; F16ToF32 sends it zeros, subnormals,
// Inf and NaN.
func f16ToF32Slow(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0:
		v := float32(mant) * (1.0 / (1 << 24)) // exact: mant < 2^10
		if sign != 0 {
			return -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// F32ToBF16 converts to bfloat16 (the top 16 bits of a float32) with
// round-to-nearest-even; NaN stays a quiet NaN.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7f800000 == 0x7f800000 && b&0x7fffff != 0 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BF16ToF32 converts a bfloat16 value to float32 exactly.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
