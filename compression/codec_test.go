package compression

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"testing"
)

func roundTrip1(t *testing.T, c Codec, x []float32, rows, cols int) ([]float32, []byte) {
	t.Helper()
	p, err := c.Encode(nil, x, rows, cols)
	if err != nil {
		t.Fatalf("%v: encode: %v", c.ID(), err)
	}
	if len(p) > c.MaxEncodedLen(rows, cols) {
		t.Fatalf("%v: payload %d bytes > MaxEncodedLen %d", c.ID(), len(p), c.MaxEncodedLen(rows, cols))
	}
	y := make([]float32, rows*cols)
	if err := c.Decode(y, p, rows, cols); err != nil {
		t.Fatalf("%v: decode: %v", c.ID(), err)
	}
	return y, p
}

func TestLosslessRoundTrip(t *testing.T) {
	const rows, cols = 37, 19
	x := gaussian(3, rows*cols, 10)
	x[0], x[1], x[2] = float32(math.Inf(1)), float32(math.Copysign(0, -1)), 1e-40
	// Values representable in fp16 and bf16 respectively.
	x16 := make([]float32, len(x))
	xb := make([]float32, len(x))
	for i, v := range x {
		x16[i] = F16ToF32(F32ToF16(v))
		xb[i] = BF16ToF32(F32ToBF16(v))
	}
	for _, tc := range []struct {
		c Codec
		x []float32
	}{{None{}, x}, {Half{FP16}, x16}, {Half{BF16}, xb}} {
		t.Run(tc.c.ID().String(), func(t *testing.T) {
			y, _ := roundTrip1(t, tc.c, tc.x, rows, cols)
			for i := range y {
				if math.Float32bits(y[i]) != math.Float32bits(tc.x[i]) {
					t.Fatalf("element %d: %v → %v", i, tc.x[i], y[i])
				}
			}
		})
	}
	// NaN passes through the raw codec (a diverged run should be visible,
	// not rejected as corruption).
	y, _ := roundTrip1(t, None{}, []float32{float32(math.NaN())}, 1, 1)
	if y[0] == y[0] {
		t.Errorf("none: NaN came back as %v", y[0])
	}
}

func TestHalfRelativeError(t *testing.T) {
	const rows, cols = 64, 64
	for _, tc := range []struct {
		format    Precision
		bound     float64 // half an ulp, relative
		minNormal float64
	}{{FP16, 1.0 / (1 << 11), 1.0 / (1 << 14)}, {BF16, 1.0 / (1 << 8), 0x1p-126}} {
		t.Run(tc.format.String(), func(t *testing.T) {
			x := gaussian(4, rows*cols, 100)
			y, p := roundTrip1(t, Half{tc.format}, x, rows, cols)
			if len(p) != 2*rows*cols {
				t.Errorf("payload %d bytes, want %d", len(p), 2*rows*cols)
			}
			for i := range x {
				if math.Abs(float64(x[i])) < tc.minNormal {
					continue // subnormal range: absolute, not relative, error
				}
				if e := math.Abs(float64(y[i]-x[i])) / math.Abs(float64(x[i])); e > tc.bound {
					t.Fatalf("element %d: %v → %v, relative error %g > %g", i, x[i], y[i], e, tc.bound)
				}
			}
		})
	}
}

func TestInt8ErrorBound(t *testing.T) {
	for _, bs := range []int{1, 7, 64, 1000} {
		t.Run("block="+itoa(bs), func(t *testing.T) {
			const rows, cols = 33, 31 // 1023 values: a partial last block
			x := gaussian(uint64(bs), rows*cols, 3)
			x[5] = 1000 // an outlier only hurts its own block
			c := Int8Block{BlockSize: bs}
			y, p := roundTrip1(t, c, x, rows, cols)
			nb := (rows*cols + bs - 1) / bs
			if want := uvarintLen(uint64(bs)) + 4*nb + rows*cols; len(p) != want {
				t.Errorf("payload %d bytes, want %d", len(p), want)
			}
			for b := 0; b < nb; b++ {
				lo, hi := b*bs, min((b+1)*bs, len(x))
				var amax float64
				for _, v := range x[lo:hi] {
					amax = max(amax, math.Abs(float64(v)))
				}
				bound := amax/127/2*(1+1e-6) + 1e-30
				for i := lo; i < hi; i++ {
					if e := math.Abs(float64(y[i] - x[i])); e > bound {
						t.Fatalf("element %d in block %d: error %g > absmax/254 = %g", i, b, e, bound)
					}
				}
			}
		})
	}
	if _, err := (Int8Block{BlockSize: 4}).Encode(nil, []float32{1, float32(math.Inf(1))}, 1, 2); !errors.Is(err, ErrNonFinite) {
		t.Errorf("int8 of Inf: err = %v, want ErrNonFinite", err)
	}
}

// Error feedback: the running sum of what topk sent converges to the running
// sum of the inputs (the gap is exactly the residual, which stays bounded),
// while without feedback the gap grows with the number of steps.
func TestTopKErrorFeedbackConverges(t *testing.T) {
	const rows, cols, steps = 16, 32, 400
	n := rows * cols
	run := func(feedback bool) float64 {
		c := &TopK{Frac: 0.05, Precision: FP16, Feedback: feedback}
		sumX := make([]float64, n)
		sumY := make([]float64, n)
		for s := 0; s < steps; s++ {
			x := gaussian(uint64(100+s), n, 1)
			for i := range x {
				x[i] += 0.3 // a consistent bias that topk would otherwise mostly drop
			}
			y, p := roundTrip1(t, c, x, rows, cols)
			k := int(math.Ceil(0.05 * float64(n)))
			nz := 0
			for i := range y {
				sumX[i] += float64(x[i])
				sumY[i] += float64(y[i])
				if y[i] != 0 {
					nz++
				}
			}
			if nz > k {
				t.Fatalf("step %d: %d non-zeros sent, k = %d (payload %d bytes)", s, nz, k, len(p))
			}
		}
		var g, sc float64
		for i := range sumX {
			g += (sumX[i] - sumY[i]) * (sumX[i] - sumY[i])
			sc += sumX[i] * sumX[i]
		}
		return math.Sqrt(g / sc)
	}
	withFB := run(true)
	without := run(false)
	if withFB > 0.1 {
		t.Errorf("with feedback the accumulated sums differ by %.3f (relative), want < 0.1", withFB)
	}
	if without < 5*withFB {
		t.Errorf("without feedback gap %.3f is not clearly worse than with %.3f: the test cannot tell feedback works", without, withFB)
	}
}

func TestLowRankExactOnLowRankInput(t *testing.T) {
	for _, tc := range []struct{ rows, cols, rank, r int }{
		{64, 48, 3, 3}, {64, 48, 3, 8}, {200, 32, 16, 16}, {10, 100, 10, 12}, {64, 32, 1, 8},
	} {
		t.Run("rank="+itoa(tc.rank)+"/r="+itoa(tc.r), func(t *testing.T) {
			x := lowRankMatrix(uint64(tc.rows), tc.rows, tc.cols, tc.rank)
			if tc.rank == 1 {
				// Small integers with repeated rows: P = M·Q is rank 1
				// to the last bit, so the extra columns of P are pure
				// rounding noise (this once came back as ±column 0).
				for i := 0; i < tc.rows; i++ {
					for j := 0; j < tc.cols; j++ {
						x[i*tc.cols+j] = float32(i%7-3) * float32(j%5+1)
					}
				}
			}
			c := &LowRank{Rank: tc.r, Iters: 1, Precision: FP32, Seed: 1}
			y, p := roundTrip1(t, c, x, tc.rows, tc.cols)
			re := min(tc.r, tc.rows, tc.cols)
			if want := 2 + (tc.rows+tc.cols)*re*4; len(p) != want {
				t.Errorf("payload %d bytes, want %d", len(p), want)
			}
			if e := relErr(y, x); e > 1e-5 {
				t.Errorf("relative error %g on a rank-%d matrix with r=%d, want exact (< 1e-5)", e, tc.rank, tc.r)
			}
		})
	}
}

func TestLowRankErrorDecreasesWithRank(t *testing.T) {
	const rows, cols = 256, 128
	x := activationLike(9, rows, cols)
	prev := math.Inf(1)
	for _, r := range []int{1, 2, 4, 8, 16, 32, 64} {
		c := &LowRank{Rank: r, Iters: 2, Precision: FP32, Seed: 2}
		y, _ := roundTrip1(t, c, x, rows, cols)
		e := relErr(y, x)
		t.Logf("r=%d relative error %.4f", r, e)
		if e >= prev {
			t.Errorf("r=%d: error %.4f did not decrease from %.4f", r, e, prev)
		}
		prev = e
	}
}

// With a warm start and error feedback, repeatedly sending the same matrix
// converges: the accumulated reconstruction approaches the accumulated input.
func TestLowRankFeedbackAndWarmStart(t *testing.T) {
	const rows, cols, steps = 128, 64, 30
	x := activationLike(11, rows, cols)
	c := &LowRank{Rank: 8, Iters: 1, Precision: FP16, Feedback: true, Seed: 3}
	sum := make([]float32, rows*cols)
	want := make([]float32, rows*cols)
	first := 0.0
	for s := 0; s < steps; s++ {
		y, _ := roundTrip1(t, c, x, rows, cols)
		if s == 0 {
			first = relErr(y, x)
		}
		for i := range y {
			sum[i] += y[i]
			want[i] += x[i]
		}
	}
	if e := relErr(sum, want); e > first/5 {
		t.Errorf("after %d steps the accumulated error %.4f is not ≪ single-shot error %.4f", steps, e, first)
	}
	// Rank changes mid-stream keep working (the receiver reads r from the payload).
	c.Apply(Setting{Rank: 16, Precision: FP32})
	_, p := roundTrip1(t, c, x, rows, cols)
	if len(p) != 2+(rows+cols)*16*4 {
		t.Errorf("after Apply(rank 16, fp32) payload is %d bytes", len(p))
	}
}

func TestBasisOrthonormalAndDeterministic(t *testing.T) {
	for _, tc := range []struct{ d, k int }{{256, 16}, {64, 64}, {1024, 32}} {
		b, err := NewBasis(42, tc.d, tc.k)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < tc.k; i++ {
			for j := 0; j <= i; j++ {
				var s float64
				for r := 0; r < tc.d; r++ {
					s += float64(b.U[r*tc.k+i]) * float64(b.U[r*tc.k+j])
				}
				want := 0.0
				if i == j {
					want = 1
				}
				if math.Abs(s-want) > 1e-6 {
					t.Fatalf("d=%d k=%d: (UᵀU)[%d,%d] = %.9f, want %v", tc.d, tc.k, i, j, s, want)
				}
			}
		}
		b2, _ := NewBasis(42, tc.d, tc.k)
		b3, _ := NewBasis(43, tc.d, tc.k)
		same, diff := true, false
		for i := range b.U {
			same = same && math.Float32bits(b.U[i]) == math.Float32bits(b2.U[i])
			diff = diff || b.U[i] != b3.U[i]
		}
		if !same || !diff {
			t.Errorf("d=%d k=%d: same seed identical = %v, other seed differs = %v; want true, true", tc.d, tc.k, same, diff)
		}
	}
}

// Golden bits: a stage on another machine or Go version must derive the same
// U and E0, bit for bit. If this changes, peers with old and new builds
// disagree about the basis and every forward message decodes to garbage.
func TestBasisGolden(t *testing.T) {
	b, _ := NewBasis(7, 64, 8)
	e, _ := Embeddings(7, 16, 64, DefaultEmbedStd)
	h := fnv.New64a()
	for _, v := range append(append([]float32(nil), b.U...), e...) {
		_ = binary.Write(h, binary.LittleEndian, math.Float32bits(v))
	}
	if got := h.Sum64(); got != goldenBasisHash {
		t.Fatalf("basis/embedding bits changed: hash %#x, want %#x (this breaks mixed-version runs; if intended, update goldenBasisHash and say so in the release notes)", got, goldenBasisHash)
	}
}

func newTestSubspace(t *testing.T, d, k, vocab int, p Precision) *Subspace {
	t.Helper()
	s, err := NewSubspace(5, d, k, vocab, p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSubspaceForwardExact(t *testing.T) {
	const rows, d, k = 50, 64, 8
	for _, tc := range []struct {
		vocab int
		p     Precision
		lz4   bool
		tol   float64
	}{
		{256, FP32, false, 1e-6}, {256, FP32, true, 1e-6}, {300, FP16, false, 1e-3},
		{70000, BF16, true, 1e-2}, {256, Int8, false, 1e-2},
		// Coefficients are ~half of h's energy here (E0 is exact), so the
		// relative error of h is about half the coefficients' (int6 ≈ 1.5%,
		// int4 ≈ 6% relative RMS for Gaussian rows of 8).
		{256, Int6, false, 2e-2}, {300, Int4, true, 8e-2},
	} {
		t.Run("vocab="+itoa(tc.vocab)+"/prec="+tc.p.String()+"/lz4="+map[bool]string{true: "on", false: "off"}[tc.lz4], func(t *testing.T) {
			s := newTestSubspace(t, d, k, tc.vocab, tc.p)
			s.LZ4Tokens = tc.lz4
			toks := make([]int32, rows)
			for i := range toks {
				toks[i] = int32((i * 7919) % min(tc.vocab, 40)) // a small alphabet, as text
			}
			c := gaussian(8, rows*k, 1)
			h := make([]float32, rows*d)
			s.Basis.Expand(h, c, rows)
			for i, tok := range toks {
				for j := 0; j < d; j++ {
					h[i*d+j] += s.E0[int(tok)*d+j]
				}
			}
			p, err := s.EncodeWithTokens(nil, h, toks, rows, d)
			if err != nil {
				t.Fatal(err)
			}
			h2 := make([]float32, rows*d)
			toks2 := make([]int32, rows)
			if err := s.DecodeWithTokens(h2, toks2, p, rows, d); err != nil {
				t.Fatal(err)
			}
			for i := range toks {
				if toks[i] != toks2[i] {
					t.Fatalf("token %d: %d → %d", i, toks[i], toks2[i])
				}
			}
			if e := relErr(h2, h); e > tc.tol {
				t.Errorf("relative error %g > %g", e, tc.tol)
			}
			t.Logf("%d bytes for %d tokens (%.1f B/token; fp32 would be %d)", len(p), rows, float64(len(p))/rows, 4*d)
			// A backward payload must not be accepted as forward, and vice versa.
			if err := s.Decode(h2, p, rows, d); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Decode(forward payload) err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestSubspaceBackwardIsProjection(t *testing.T) {
	const rows, d, k = 20, 48, 6
	s := newTestSubspace(t, d, k, 256, FP32)
	g := gaussian(12, rows*d, 1)
	got, _ := roundTrip1(t, s, g, rows, d)
	// Reference U·Uᵀ·g in float64.
	want := make([]float32, rows*d)
	for i := 0; i < rows; i++ {
		for a := 0; a < d; a++ {
			var v float64
			for j := 0; j < k; j++ {
				var c float64
				for b := 0; b < d; b++ {
					c += float64(s.Basis.U[b*k+j]) * float64(g[i*d+b])
				}
				v += float64(s.Basis.U[a*k+j]) * c
			}
			want[i*d+a] = float32(v)
		}
	}
	if e := relErr(got, want); e > 1e-5 {
		t.Errorf("backward reconstruction differs from U·Uᵀ·g: relative error %g", e)
	}
	// Projection is idempotent: a gradient already in span(U) passes exactly.
	again, _ := roundTrip1(t, s, got, rows, d)
	if e := relErr(again, got); e > 1e-5 {
		t.Errorf("projecting twice changed the result: %g", e)
	}
}

func TestProjectRowsCols(t *testing.T) {
	const d, k, n = 32, 4, 10
	b, _ := NewBasis(1, d, k)
	// Rows: each row of W (n×d) ends in span(U), i.e. W·U·Uᵀ = W.
	w := gaussian(2, n*d, 1)
	if err := b.ProjectRows(w, n, d); err != nil {
		t.Fatal(err)
	}
	w2 := append([]float32(nil), w...)
	_ = b.ProjectRows(w2, n, d)
	if e := relErr(w2, w); e > 1e-5 {
		t.Errorf("ProjectRows not idempotent: %g", e)
	}
	c := make([]float32, n*k)
	b.Coeffs(c, w, n)
	back := make([]float32, n*d)
	b.Expand(back, c, n)
	if e := relErr(back, w); e > 1e-5 {
		t.Errorf("rows after ProjectRows not in span(U): %g", e)
	}
	// Cols: W (d×n), y = W·x lands in span(U) for any x.
	wc := gaussian(3, d*n, 1)
	if err := b.ProjectCols(wc, d, n); err != nil {
		t.Fatal(err)
	}
	x := gaussian(4, n, 1)
	y := make([]float32, d)
	mulAB(y, wc, x, d, n, 1)
	cy := make([]float32, k)
	b.Coeffs(cy, y, 1)
	yb := make([]float32, d)
	b.Expand(yb, cy, 1)
	if e := relErr(yb, y); e > 1e-5 {
		t.Errorf("W·x after ProjectCols not in span(U): %g", e)
	}
	if err := b.ProjectCols(wc, n, d); !errors.Is(err, ErrShape) {
		t.Errorf("ProjectCols with wrong shape: err = %v, want ErrShape", err)
	}
}

func TestLZ4(t *testing.T) {
	// Token-like bytes compress; lz4 must be applied and round-trip.
	text := []byte("func main() {\n\tfmt.Println(\"hello, world\")\n}\n")
	var payload []byte
	for len(payload) < 8192 {
		payload = append(payload, text...)
	}
	packed, applied := Compress(nil, payload, 1)
	if !applied || len(packed) >= len(payload) {
		t.Fatalf("repetitive text: applied=%v, %d → %d bytes", applied, len(payload), len(packed))
	}
	out, err := Decompress(nil, packed, len(payload))
	if err != nil || string(out) != string(payload) {
		t.Fatalf("round trip failed: %v", err)
	}
	if _, err := Decompress(nil, packed, len(payload)-1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("maxLen below the raw length: err = %v, want ErrCorrupt", err)
	}
	// Random bytes do not compress: sent raw, flag false, bytes unchanged.
	g := newRNG(1, "lz4")
	rnd := make([]byte, 4096)
	for i := range rnd {
		rnd[i] = byte(g.next())
	}
	out, applied = Compress([]byte{9}, rnd, 4)
	if applied || len(out) != 1+len(rnd) || string(out[1:]) != string(rnd) {
		t.Errorf("random bytes: applied=%v len=%d; want raw copy appended", applied, len(out))
	}
	// A LinkCodec with lz4 round-trips whatever it decides.
	for _, cfg := range []Config{
		{Method: MethodNone}, {Method: MethodFP16}, {Method: MethodInt8}, {Method: MethodLowRank, Rank: 32},
		{Method: MethodTopK}, {Method: MethodSubspace, Rank: 8},
	} {
		full := DefaultConfig()
		full.Method, full.LZ4 = cfg.Method, true
		if cfg.Rank != 0 {
			full.Rank = cfg.Rank
		}
		l, err := NewLink(full, 64, 256, 1)
		if err != nil {
			t.Fatal(err)
		}
		x := activationLike(3, 32, 64)
		for i := range x { // smooth values: shuffled planes compress
			x[i] = float32(int(x[i]*4)) / 4
		}
		p, applied, err := l.Encode(nil, x, 32, 64)
		if err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if err := l.Decode(y, p, applied, 32, 64); err != nil {
			t.Fatalf("%v: decode (lz4=%v): %v", cfg.Method, applied, err)
		}
		t.Logf("%v: lz4 applied=%v, %d bytes", cfg.Method, applied, len(p))
		if cfg.Method == MethodNone && relErr(y, x) != 0 {
			t.Errorf("none+lz4 not lossless")
		}
	}
}

func TestDecodeRejectsBadPayloads(t *testing.T) {
	s := newTestSubspace(t, 16, 4, 256, FP16)
	x := activationLike(1, 8, 16)
	for _, c := range []Codec{None{}, Half{FP16}, Int8Block{BlockSize: 8}, &TopK{Frac: 0.1, Precision: FP16},
		&LowRank{Rank: 4, Iters: 1, Precision: FP16}, s} {
		t.Run(c.ID().String(), func(t *testing.T) {
			p, err := c.Encode(nil, x, 8, 16)
			if err != nil {
				t.Fatal(err)
			}
			y := make([]float32, len(x))
			for _, bad := range [][]byte{nil, p[:len(p)-1], append(append([]byte(nil), p...), 0)} {
				if err := c.Decode(y, bad, 8, 16); !errors.Is(err, ErrCorrupt) {
					t.Errorf("%d-byte payload (valid is %d): err = %v, want ErrCorrupt", len(bad), len(p), err)
				}
			}
			if err := c.Decode(y[:5], p, 8, 16); !errors.Is(err, ErrShape) {
				t.Errorf("short dst: err = %v, want ErrShape", err)
			}
		})
	}
	// NaN scale in int8.
	p, _ := Int8Block{BlockSize: 4}.Encode(nil, []float32{1, 2, 3, 4}, 1, 4)
	copy(p[1:], []byte{0, 0, 0xc0, 0x7f})
	if err := (Int8Block{}).Decode(make([]float32, 4), p, 1, 4); !errors.Is(err, ErrCorrupt) {
		t.Errorf("int8 NaN scale: err = %v, want ErrCorrupt", err)
	}
}

func itoa(n int) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func TestShuffleRoundTrip(t *testing.T) {
	for _, es := range []int{1, 2, 3, 4} {
		for _, n := range []int{0, 1, 5, 64, 67} {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(i * 31)
			}
			mid, back := make([]byte, n), make([]byte, n)
			shuffle(mid, src, es)
			unshuffle(back, mid, es)
			if string(back) != string(src) {
				t.Fatalf("es=%d n=%d: shuffle/unshuffle changed the bytes", es, n)
			}
			if es > 1 && n >= 2*es && mid[1] != src[es] {
				t.Fatalf("es=%d n=%d: plane 0 is not the first bytes of each element", es, n)
			}
		}
	}
}

// A zero (or rank-deficient) micro-batch must not collapse the warm start:
// the next full-rank-r input is still sent exactly.
func TestLowRankRecoversFromZeroInput(t *testing.T) {
	const rows, cols = 40, 30
	c := &LowRank{Rank: 3, Iters: 1, Precision: FP32, Seed: 4}
	y, _ := roundTrip1(t, c, make([]float32, rows*cols), rows, cols)
	for i, v := range y {
		if v != 0 {
			t.Fatalf("zero input decoded to %v at %d", v, i)
		}
	}
	x := lowRankMatrix(6, rows, cols, 3)
	y, _ = roundTrip1(t, c, x, rows, cols)
	if e := relErr(y, x); e > 1e-5 {
		t.Errorf("rank-3 input after a zero input: relative error %g, want exact", e)
	}
}

// PayloadSize matches what the codecs actually produce.
func TestPayloadSize(t *testing.T) {
	const rows, d = 128, 64
	x := activationLike(5, rows, d)
	for m := MethodNone; m <= MethodSubspace; m++ {
		for _, p := range []Precision{FP32, FP16, Int8, Int6, Int4, Int3, Int2} {
			cfg := DefaultConfig()
			cfg.Method, cfg.Precision, cfg.Rank, cfg.KFraction = m, p, 16, 0.05
			if cfg.Validate() != nil {
				continue
			}
			c, err := New(cfg, d, 256, 1)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			if s, ok := c.(*Subspace); ok {
				got, err = s.EncodeWithTokens(nil, x, make([]int32, rows), rows, d)
			} else {
				got, err = c.Encode(nil, x, rows, d)
			}
			if err != nil {
				t.Fatal(err)
			}
			want := PayloadSize(cfg, rows, d, 256)
			if m == MethodTopK {
				// Estimated: allow the gap bytes to differ.
				if math.Abs(float64(len(got)-want)) > 0.2*float64(want) {
					t.Errorf("%v/%v: PayloadSize %d, actual %d (more than 20%% off)", m, p, want, len(got))
				}
				continue
			}
			if len(got) != want {
				t.Errorf("%v/%v: PayloadSize %d, actual %d", m, p, want, len(got))
			}
		}
	}
}

// Degenerate shapes (no rows, no columns, a single value) round-trip through
// every codec without error or panic.
func TestEdgeShapes(t *testing.T) {
	for _, sh := range []struct{ rows, cols int }{{0, 16}, {1, 16}, {16, 1}, {1, 1}, {0, 0}, {5, 0}} {
		for m := MethodNone; m <= MethodSubspace; m++ {
			cfg := DefaultConfig()
			cfg.Method, cfg.Rank, cfg.LZ4 = m, 4, true
			d := max(sh.cols, 1)
			if m == MethodSubspace && sh.cols == 0 {
				continue // subspace needs width d = cols ≥ k
			}
			if m == MethodSubspace {
				cfg.Rank = 1
			}
			l, err := NewLink(cfg, d, 256, 1)
			if err != nil {
				t.Fatal(err)
			}
			x := gaussian(1, sh.rows*sh.cols, 1)
			p, applied, err := l.Encode(nil, x, sh.rows, sh.cols)
			if err != nil {
				t.Errorf("%v %d×%d: encode: %v", m, sh.rows, sh.cols, err)
				continue
			}
			y := make([]float32, len(x))
			if err := l.Decode(y, p, applied, sh.rows, sh.cols); err != nil {
				t.Errorf("%v %d×%d: decode: %v", m, sh.rows, sh.cols, err)
			}
			if s, ok := l.Codec.(*Subspace); ok {
				toks := make([]int32, sh.rows)
				p, err := s.EncodeWithTokens(nil, x, toks, sh.rows, sh.cols)
				if err == nil {
					err = s.DecodeWithTokens(y, toks, p, sh.rows, sh.cols)
				}
				if err != nil {
					t.Errorf("subspace forward %d×%d: %v", sh.rows, sh.cols, err)
				}
			}
		}
	}
}

// LinkCodec stops paying for lz4 on payloads that never compress, but keeps
// probing, and picks it up again when the data changes.
func TestLinkCodecBacksOffLZ4(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Method, cfg.LZ4 = MethodNone, true
	l, err := NewLink(cfg, 64, 256, 1)
	if err != nil {
		t.Fatal(err)
	}
	noise := make([]float32, 16*64)
	g := newRNG(2, "noise")
	for i := range noise {
		b := uint32(g.next())
		if b&0x7f800000 == 0x7f800000 {
			b &^= 1 << 30 // no Inf/NaN
		}
		noise[i] = math.Float32frombits(b)
	}
	smooth := make([]float32, len(noise)) // zeros: compresses extremely well
	tried := 0
	for i := 0; i < 40; i++ {
		p, applied, err := l.Encode(nil, noise, 16, 64)
		if err != nil || applied {
			t.Fatalf("noise message %d: applied=%v err=%v", i, applied, err)
		}
		if l.skipped == 0 { // this message tried lz4
			tried++
		}
		y := make([]float32, len(noise))
		if err := l.Decode(y, p, applied, 16, 64); err != nil || relErr(y, noise) != 0 {
			t.Fatalf("noise message %d: round trip failed: %v", i, err)
		}
	}
	if tried > lz4MissLimit+40/lz4RetryEvery+1 {
		t.Errorf("tried lz4 on %d of 40 incompressible messages; want back-off", tried)
	}
	// Within one retry period a compressible payload gets lz4 again.
	got := false
	for i := 0; i < lz4RetryEvery && !got; i++ {
		_, got, _ = l.Encode(nil, smooth, 16, 64)
	}
	if !got {
		t.Errorf("lz4 never retried after the data became compressible")
	}
}

// The warm start pays off on a stream of different micro-batches that share
// their dominant column space (as consecutive activations do): after a few
// calls one power iteration from the previous Q beats one from a fresh
// random Q.
func TestLowRankWarmStartHelps(t *testing.T) {
	const rows, cols, r, shared = 256, 128, 8, 8
	b := gaussian(50, shared*cols, 1)
	for j := 0; j < shared; j++ { // a decaying spectrum in the shared factor
		for c := 0; c < cols; c++ {
			b[j*cols+c] /= float32(1 + j)
		}
	}
	warm := &LowRank{Rank: r, Iters: 1, Precision: FP32, Seed: 7}
	cold := &LowRank{Rank: r, Iters: 1, Precision: FP32, Seed: 7}
	var ew, ec float64
	for s := 0; s < 12; s++ {
		a := gaussian(uint64(100+s), rows*shared, 1)
		x := make([]float32, rows*cols)
		mulAB(x, a, b, rows, shared, cols)
		noise := gaussian(uint64(200+s), rows*cols, 0.02)
		for i := range x {
			x[i] += noise[i]
		}
		yw, _ := roundTrip1(t, warm, x, rows, cols)
		cold.Reset()
		yc, _ := roundTrip1(t, cold, x, rows, cols)
		if s >= 4 {
			ew += relErr(yw, x)
			ec += relErr(yc, x)
		}
	}
	t.Logf("mean relative error over calls 4..11: warm %.4f, cold %.4f", ew/8, ec/8)
	if !(ew < 0.7*ec) {
		t.Errorf("warm start error %.4f is not clearly below cold start %.4f", ew/8, ec/8)
	}
}

// Int4/Int6 subspace coefficients keep their stated bounds: the forward
// path (nearest) is within half a step of every coefficient, the backward
// path (stochastic) within one step and unbiased — averaged over many
// encodings it converges to U·Uᵀg at the 1/√n rate.
func TestSubspaceLowBitErrorBound(t *testing.T) {
	const rows, d, k = 16, 64, 24
	for _, p := range []Precision{Int6, Int4, Int3, Int2} {
		t.Run("prec="+p.String(), func(t *testing.T) {
			s := newTestSubspace(t, d, k, 256, p)
			ref := newTestSubspace(t, d, k, 256, FP32)
			q := float64(lowQMax(lowBits(p)))
			x := activationLike(21, rows, d)
			want := make([]float32, rows*k)
			ref.Basis.Coeffs(want, x, rows)
			step := make([]float64, rows) // the row's quantization step
			for i := 0; i < rows; i++ {
				var amax float64
				for _, v := range want[i*k : (i+1)*k] {
					amax = max(amax, math.Abs(float64(v)))
				}
				step[i] = amax / q * (1 + 1.0/128)
			}
			coeffsOf := func(payload []byte) []float32 {
				t.Helper()
				r := reader{b: payload[1:]} // past the kind byte
				if err := s.readCoeffs(&r, rows); err != nil {
					t.Fatal(err)
				}
				return append([]float32(nil), s.c...)
			}
			// Forward: nearest rounding, |ĉ − c| ≤ step/2.
			toks := make([]int32, rows)
			fw, err := s.EncodeWithTokens(nil, x, toks, rows, d)
			if err != nil {
				t.Fatal(err)
			}
			h := make([]float32, rows*d)
			if err := s.DecodeWithTokens(h, toks, fw, rows, d); err != nil {
				t.Fatal(err)
			}
			// Re-derive the coefficients the receiver used from h.
			for i := range toks {
				for j := 0; j < d; j++ {
					h[i*d+j] -= s.E0[int(toks[i])*d+j]
				}
			}
			got := make([]float32, rows*k)
			s.Basis.Coeffs(got, h, rows)
			// want is the coefficients of x − E0[0] for the forward path.
			xf := append([]float32(nil), x...)
			for i := 0; i < rows; i++ {
				for j := 0; j < d; j++ {
					xf[i*d+j] -= s.E0[j]
				}
			}
			wantF := make([]float32, rows*k)
			ref.Basis.Coeffs(wantF, xf, rows)
			for i := 0; i < rows; i++ {
				var amax float64
				for _, v := range wantF[i*k : (i+1)*k] {
					amax = max(amax, math.Abs(float64(v)))
				}
				st := amax / q * (1 + 1.0/128)
				for j := 0; j < k; j++ {
					if e := math.Abs(float64(got[i*k+j] - wantF[i*k+j])); e > st/2+1e-5*amax {
						t.Fatalf("forward row %d coef %d: error %g > half step %g", i, j, e, st/2)
					}
				}
			}
			// Backward: stochastic rounding, |ĉ − c| < step, mean → c.
			const n = 400
			mean := make([]float64, rows*k)
			for it := 0; it < n; it++ {
				bw, err := s.Encode(nil, x, rows, d)
				if err != nil {
					t.Fatal(err)
				}
				c := coeffsOf(bw)
				for i := range c {
					e := math.Abs(float64(c[i] - want[i]))
					if e > step[i/k]*(1+1e-5) {
						t.Fatalf("backward row %d coef %d: error %g ≥ step %g", i/k, i%k, e, step[i/k])
					}
					mean[i] += float64(c[i]) / n
				}
			}
			// The mean's error is at most step/(2√n) per coefficient in
			// standard deviation; allow 5σ (= step/8 at n = 400: nearest
			// rounding, off by up to step/2, would fail here).
			for i := range mean {
				if e := math.Abs(mean[i] - float64(want[i])); e > 5*step[i/k]/(2*math.Sqrt(n)) {
					t.Fatalf("backward coef %d: mean of %d encodings off by %g (step %g): biased", i, n, e, step[i/k])
				}
			}
		})
	}
}

// The configuration that meets issue #4's bar costs ≥ 32× fewer bytes than
// fp32 in both directions at d = 256 (byte-level vocabulary, a micro-batch
// of 4×128 tokens): k = 56 int4 is 28 B of codes + 2 B scale (+ 1 B token
// id forward) per token, the same bytes as k = 26 int8.
func TestSubspaceInt4K56Ratio(t *testing.T) {
	const rows, d, vocab = 512, 256, 256
	cfg := DefaultConfig()
	cfg.Method, cfg.Rank, cfg.Precision = MethodSubspace, 56, Int4
	fwd := PayloadSize(cfg, rows, d, vocab)
	s, err := NewSubspace(1, d, 56, vocab, Int4)
	if err != nil {
		t.Fatal(err)
	}
	g := activationLike(3, rows, d)
	bwd, err := s.Encode(nil, g, rows, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dir   string
		bytes int
	}{{"forward", fwd}, {"backward", len(bwd)}} {
		ratio := float64(4*d*rows) / float64(c.bytes)
		t.Logf("%s: %.2f B/token, %.1f× fewer than fp32", c.dir, float64(c.bytes)/rows, ratio)
		if ratio < 32 {
			t.Errorf("%s: %.1f× < 32× fewer bytes than fp32", c.dir, ratio)
		}
	}
	cfg.Precision = Int8
	cfg.Rank = 26
	if int8Bytes := PayloadSize(cfg, rows, d, vocab); int8Bytes < fwd {
		t.Errorf("k=56 int4 (%d B) costs more than k=26 int8 (%d B)", fwd, int8Bytes)
	}
}
