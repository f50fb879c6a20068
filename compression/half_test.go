package compression

import (
	"math"
	"testing"
)

// Every binary16 value converts to float32 and back to itself (NaNs stay NaN).
func TestF16RoundTripExhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		back := F32ToF16(f)
		if f != f {
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %#04x came back as non-NaN %#04x", h, back)
			}
			continue
		}
		if back != uint16(h) {
			t.Fatalf("%#04x → %v → %#04x", h, f, back)
		}
	}
}

func TestBF16RoundTripExhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := BF16ToF32(uint16(h))
		back := F32ToBF16(f)
		if f != f {
			if !math.IsNaN(float64(BF16ToF32(back))) {
				t.Fatalf("NaN %#04x came back as %#04x", h, back)
			}
			continue
		}
		if back != uint16(h) {
			t.Fatalf("%#04x → %v → %#04x", h, f, back)
		}
	}
}

// nearestCheck verifies that conv(f) is a nearest representable value, ties
// to even, by comparing with its neighbours in float64.
func nearestCheck(t *testing.T, name string, f float32, h uint16, back func(uint16) float32) {
	t.Helper()
	got := float64(back(h))
	if math.IsInf(got, 0) {
		return // overflow is checked separately
	}
	x := float64(f)
	d := math.Abs(got - x)
	for _, nb := range []uint16{h - 1, h + 1} {
		v := float64(back(nb))
		if nb&0x7fff >= 0x7c00 && name == "fp16" || math.IsNaN(v) || math.Signbit(v) != math.Signbit(got) && v != 0 {
			continue
		}
		dn := math.Abs(v - x)
		if dn < d || (dn == d && h&1 == 1) {
			t.Fatalf("%s(%v) = %#04x (%v), but %#04x (%v) is nearer or the even tie", name, f, h, got, nb, v)
		}
	}
}

func TestHalfRoundsToNearestEven(t *testing.T) {
	g := newRNG(1, "t")
	for i := 0; i < 200000; i++ {
		// Random exponents cover normals, subnormals and underflow of fp16.
		b := uint32(g.next())
		b = b&^(0xff<<23) | uint32(100+g.next()%45)<<23
		f := math.Float32frombits(b)
		nearestCheck(t, "fp16", f, F32ToF16(f), F16ToF32)
		fb := math.Float32frombits(uint32(g.next()))
		if fb == fb && !math.IsInf(float64(fb), 0) {
			nearestCheck(t, "bf16", fb, F32ToBF16(fb), BF16ToF32)
		}
	}
}

func TestHalfSpecialValues(t *testing.T) {
	inf := float32(math.Inf(1))
	cases := []struct {
		name string
		in   float32
		f16  uint16
	}{
		{"zero", 0, 0},
		{"negzero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3c00},
		{"max", 65504, 0x7bff},
		{"overflow", 65520, 0x7c00}, // halfway to 2^16 rounds to even: Inf
		{"below-overflow", 65519, 0x7bff},
		{"inf", inf, 0x7c00},
		{"neginf", -inf, 0xfc00},
		{"min-subnormal", 1.0 / (1 << 24), 0x0001},
		{"half-min-subnormal", 1.0 / (1 << 25), 0x0000}, // tie → even (0)
		{"three-halves-min-subnormal", 3.0 / (1 << 25), 0x0002},
		{"min-normal", 1.0 / (1 << 14), 0x0400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := F32ToF16(c.in); got != c.f16 {
				t.Errorf("F32ToF16(%v) = %#04x, want %#04x", c.in, got, c.f16)
			}
		})
	}
	if h := F32ToF16(float32(math.NaN())); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("F32ToF16(NaN) = %#04x, not a NaN", h)
	}
	if v := BF16ToF32(F32ToBF16(float32(math.NaN()))); v == v {
		t.Errorf("bf16 NaN round trip gave %v", v)
	}
	if v := BF16ToF32(F32ToBF16(math.MaxFloat32)); !math.IsInf(float64(v), 1) {
		t.Errorf("bf16(MaxFloat32) = %v, want +Inf (rounds up)", v)
	}
	if v := BF16ToF32(F32ToBF16(1e-40)); v == 0 || math.Abs(float64(v)-1e-40) > math.Ldexp(1, -134) {
		t.Errorf("bf16 subnormal 1e-40 → %v", v)
	}
}

func TestQuant8(t *testing.T) {
	for _, c := range []struct {
		in   float32
		want int8
	}{{0, 0}, {0.5, 0}, {1.5, 2}, {2.5, 2}, {-2.5, -2}, {126.6, 127}, {127.49, 127}, {127.6, 127}, {-130, -127}, {3.49, 3}} {
		if got := quant8(c.in); got != c.want {
			t.Errorf("quant8(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}

// The inlined fast paths agree with the full conversions everywhere they
// apply (every fp16 value; float32 around every fp16 rounding boundary).
func TestHalfFastPathsMatchSlow(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		a, b := F16ToF32(uint16(h)), f16ToF32Slow(uint16(h))
		if math.Float32bits(a) != math.Float32bits(b) && !(a != a && b != b) {
			t.Fatalf("F16ToF32(%#04x) = %v, slow path %v", h, a, b)
		}
		f := f16ToF32Slow(uint16(h))
		bits := math.Float32bits(f)
		for _, d := range []int32{-4097, -4096, -4095, -1, 0, 1, 4095, 4096, 4097} {
			x := math.Float32frombits(uint32(int32(bits) + d))
			if got, want := F32ToF16(x), f32ToF16Slow(x); got != want && !(x != x) {
				t.Fatalf("F32ToF16(%v) = %#04x, slow path %#04x", x, got, want)
			}
		}
	}
}

// The hand-inlined loops of the fp16 codec agree with the conversions on
// every fp16 value and on float32 values around every rounding boundary.
func TestHalfCodecMatchesConversions(t *testing.T) {
	var xs []float32
	for h := 0; h < 1<<16; h++ {
		f := f16ToF32Slow(uint16(h))
		bits := math.Float32bits(f)
		for _, d := range []int32{-4097, -4096, -1, 0, 1, 4096, 4097} {
			xs = append(xs, math.Float32frombits(uint32(int32(bits)+d)))
		}
	}
	p, err := Half{FP16}.Encode(nil, xs, 1, len(xs))
	if err != nil {
		t.Fatal(err)
	}
	ys := make([]float32, len(xs))
	if err := (Half{FP16}).Decode(ys, p, 1, len(xs)); err != nil {
		t.Fatal(err)
	}
	for i, x := range xs {
		h := uint16(p[2*i]) | uint16(p[2*i+1])<<8
		if want := f32ToF16Slow(x); h != want && x == x {
			t.Fatalf("encode %v: %#04x, want %#04x", x, h, want)
		}
		if want := f16ToF32Slow(h); math.Float32bits(ys[i]) != math.Float32bits(want) && want == want {
			t.Fatalf("decode %#04x: %v, want %v", h, ys[i], want)
		}
	}
}
