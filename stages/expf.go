package stages

import "math"

// expf is e^x in float32 (Cephes expf: range reduction by ln 2 and a
// degree-6 polynomial, within 2 ulp; checked against math.Exp in
// TestExpf). It is several times faster than float64 math.Exp and is what
// softmax, cross-entropy and GELU spend their time in.
func expf(x float32) float32 {
	if !(x > -87 && x < 88) {
		// Underflow to denormals, overflow and NaN are rare: let the
		// float64 routine get them right.
		return float32(math.Exp(float64(x)))
	}
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693359375
		ln2lo = -2.12194440e-4
	)
	// Round x·log2(e) to the nearest integer (conversion truncates toward 0).
	t := x * log2e
	if t < 0 {
		t -= 0.5
	} else {
		t += 0.5
	}
	ni := int32(t)
	n := float32(ni)
	r := x - n*ln2hi - n*ln2lo
	z := r * r
	y := ((((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r+5.0000001201e-1)*z + r + 1)
	return y * math.Float32frombits(uint32(ni+127)<<23)
}

// Coefficients of tanhf's rational approximation (Eigen's
// generic_fast_tanh_float).
const (
	tanhClamp = 7.90531110763549805
	tanhA1    = 4.89352455891786e-03
	tanhA3    = 6.37261928875436e-04
	tanhA5    = 1.48572235717979e-05
	tanhA7    = 5.12229709037114e-08
	tanhA9    = -8.60467152213735e-11
	tanhA11   = 2.00018790482477e-13
	tanhA13   = -2.76076847742355e-16
	tanhB0    = 4.89352518554385e-03
	tanhB2    = 2.26843463243900e-03
	tanhB4    = 1.18534705686654e-04
	tanhB6    = 1.19825839466702e-06
)

// tanhf is tanh(x) in float32: Eigen's rational minimax approximation
// (odd degree-13 numerator over degree-6 denominator, clamped where tanh
// rounds to ±1), within 4e-7 absolute of math.Tanh (TestExpf). No exp,
// no branches but the clamp. geluForward carries its own copy inline.
func tanhf(x float32) float32 {
	if x > tanhClamp {
		x = tanhClamp
	} else if x < -tanhClamp {
		x = -tanhClamp
	}
	x2 := x * x
	p := x2*tanhA13 + tanhA11
	p = x2*p + tanhA9
	p = x2*p + tanhA7
	p = x2*p + tanhA5
	p = x2*p + tanhA3
	p = x2*p + tanhA1
	q := x2*tanhB6 + tanhB4
	q = x2*q + tanhB2
	q = x2*q + tanhB0
	return x * p / q
}
