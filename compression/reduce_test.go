package compression

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

// reduceInputs are chunks a gradient sum sends: Gaussian, magnitudes over
// twelve decades (most of them far below the chunk's largest), zeros, one
// outlier, and float32 subnormals.
func reduceInputs() map[string][]float32 {
	wide := gaussian(7, 4096, 1)
	g := newRNG(8, "wide")
	for i := range wide {
		wide[i] *= float32(math.Pow(10, 12*g.uniform()-9))
	}
	outlier := gaussian(9, 1000, 1e-3)
	outlier[17] = 3e4
	sub := make([]float32, 64)
	for i := range sub {
		sub[i] = float32(i-32) * 1e-44
	}
	return map[string][]float32{
		"gaussian": gaussian(6, 16<<10, 0.01),
		"wide":     wide,
		"zeros":    make([]float32, 100),
		"outlier":  outlier,
		"subnorm":  sub,
		"one":      {-2.5},
		"empty":    {},
	}
}

// TestReduceChunkRoundTrip: each method's chunk decodes within its stated
// bound (none exactly; fp16 within 2^-11 relative plus 2^-39 of the chunk's
// largest magnitude; int8 within half a step of its block), the encoder's
// got is bit for bit what the receiver decodes, and the payload has the
// length ReduceChunkLen says.
func TestReduceChunkRoundTrip(t *testing.T) {
	for name, x := range reduceInputs() {
		for _, m := range []ReduceMethod{ReduceNone, ReduceFP16, ReduceInt8} {
			t.Run(fmt.Sprintf("input=%s/method=%v", name, m), func(t *testing.T) {
				got := make([]float32, len(x))
				p, err := AppendReduceChunk([]byte{0xaa}, x, got, m)
				if err != nil {
					t.Fatal(err)
				}
				if p[0] != 0xaa || len(p)-1 != ReduceChunkLen(len(x), m) {
					t.Fatalf("payload of %d bytes (prefix kept: %v), ReduceChunkLen says %d", len(p)-1, p[0] == 0xaa, ReduceChunkLen(len(x), m))
				}
				dec := make([]float32, len(x))
				if err := DecodeReduceChunk(dec, p[1:], m); err != nil {
					t.Fatal(err)
				}
				var amax float64
				for _, v := range x {
					amax = max(amax, math.Abs(float64(v)))
				}
				for i, v := range x {
					if math.Float32bits(dec[i]) != math.Float32bits(got[i]) {
						t.Fatalf("value %d: the receiver decodes %v, the sender thinks %v", i, dec[i], got[i])
					}
					e := math.Abs(float64(dec[i]) - float64(v))
					var bound float64
					switch m {
					case ReduceFP16:
						bound = 0x1p-11*math.Abs(float64(v)) + 0x1p-39*amax + 1e-45
					case ReduceInt8:
						b := i / ReduceInt8Block * ReduceInt8Block
						var bmax float64
						for _, w := range x[b:min(b+ReduceInt8Block, len(x))] {
							bmax = max(bmax, math.Abs(float64(w)))
						}
						bound = bmax/254*(1+1e-6) + 1e-45
					}
					if e > bound {
						t.Fatalf("value %d: %v decodes to %v, error %.3g over the bound %.3g", i, v, dec[i], e, bound)
					}
				}
			})
		}
	}
}

// TestReduceChunkRefusesNonFinite: the lossy codings refuse Inf and NaN
// (the gradient diverged); none carries them, as a plain sum would.
func TestReduceChunkRefusesNonFinite(t *testing.T) {
	for _, bad := range []float32{float32(math.Inf(1)), float32(math.NaN())} {
		x := []float32{1, bad, 3}
		got := make([]float32, 3)
		for _, m := range []ReduceMethod{ReduceFP16, ReduceInt8} {
			if _, err := AppendReduceChunk(nil, x, got, m); !errors.Is(err, ErrNonFinite) {
				t.Errorf("%v of %v: err %v, want ErrNonFinite", m, bad, err)
			}
		}
		if _, err := AppendReduceChunk(nil, x, got, ReduceNone); err != nil || math.Float32bits(got[1]) != math.Float32bits(bad) {
			t.Errorf("none of %v: got %v, err %v", bad, got[1], err)
		}
	}
}

// sumChain runs the runtime's chain over one tensor in one process:
// replica r adds its part (plus its residual) after the decoded partial sum
// of the replicas below, codes the result for the next, and the last
// replica's coded total is what everyone decodes.
func sumChain(t *testing.T, parts [][]float32, m ReduceMethod, fbs []*Feedback) []float32 {
	t.Helper()
	n := len(parts[0])
	acc := make([]float32, n)
	got := make([]float32, n)
	for r, g := range parts {
		x := slices.Clone(g)
		if fbs != nil {
			fbs[r].Add(0, 0, x)
		}
		if r > 0 {
			for i := range x {
				x[i] = acc[i] + x[i]
			}
		}
		p, err := AppendReduceChunk(nil, x, got, m)
		if err != nil {
			t.Fatal(err)
		}
		if fbs != nil {
			fbs[r].Keep(0, 0, x, got)
		}
		if err := DecodeReduceChunk(acc, p, m); err != nil {
			t.Fatal(err)
		}
	}
	return acc
}

// TestReduceFeedbackConserves: with error feedback nothing is lost, only
// delayed: after T steps of a 3-replica chain, the decoded totals plus the
// replicas' residuals add up to every gradient sent (to float rounding),
// where without feedback the coding error of every step stays in the sum.
// A redo of a step adds what its first attempt added.
func TestReduceFeedbackConserves(t *testing.T) {
	const R, T, n = 3, 20, 512
	for _, m := range []ReduceMethod{ReduceFP16, ReduceInt8} {
		t.Run(fmt.Sprintf("method=%v", m), func(t *testing.T) {
			gap := func(feedback bool) float64 {
				var fbs []*Feedback
				if feedback {
					for range R {
						fbs = append(fbs, NewFeedback([]int{n}))
					}
				}
				want := make([]float64, n) // every gradient, in float64
				have := make([]float64, n) // the decoded totals
				for step := range T {
					parts := make([][]float32, R)
					for r := range parts {
						parts[r] = gaussian(uint64(100*step+r), n, 0.01)
						for i, v := range parts[r] {
							want[i] += float64(v)
						}
					}
					for _, f := range fbs {
						f.Begin(step)
					}
					if feedback && step == 5 {
						// An attempt that fails halfway: its redo must
						// start from the same residuals.
						sumChain(t, parts[:2], m, fbs[:2])
						for _, f := range fbs {
							f.Begin(step)
						}
					}
					tot := sumChain(t, parts, m, fbs)
					for _, f := range fbs {
						f.Commit()
					}
					for i, v := range tot {
						have[i] += float64(v)
					}
				}
				var num, den float64
				for i := range want {
					h := have[i]
					for _, f := range fbs {
						h += float64(f.Residual(0)[i])
					}
					num += (h - want[i]) * (h - want[i])
					den += want[i] * want[i]
				}
				return math.Sqrt(num / den)
			}
			with, without := gap(true), gap(false)
			t.Logf("%v: |Σ totals + Σ residuals − Σ gradients| / |Σ gradients| = %.2g with feedback, %.2g without", m, with, without)
			if with > 1e-6 {
				t.Errorf("with feedback %.3g of the gradients is lost, want only float rounding (≤ 1e-6)", with)
			}
			if without < 10*with {
				t.Errorf("without feedback the loss %.3g is not clearly above the feedback's %.3g: the test shows nothing", without, with)
			}
		})
	}
}

// psgdSum runs a PowerSGD sum over R replicas in one process, each with its
// own state and gradients ms[r] (changed in place to the approximation).
func psgdSum(t *testing.T, ss []*PowerSGD, ms [][][]float32, step int) {
	t.Helper()
	R := len(ss)
	ps := make([][]float32, R)
	for r, s := range ss {
		s.Begin(step)
		ps[r] = make([]float32, s.PLen())
		if err := s.P(ms[r], ps[r]); err != nil {
			t.Fatal(err)
		}
	}
	psum := chainF32(ps)
	qs := make([][]float32, R)
	for r, s := range ss {
		qs[r] = make([]float32, s.QLen())
		if err := s.Q(ms[r], psum, qs[r]); err != nil {
			t.Fatal(err)
		}
	}
	qsum := chainF32(qs)
	for r, s := range ss {
		if err := s.Expand(ms[r], qsum); err != nil {
			t.Fatal(err)
		}
		s.Commit()
	}
}

// chainF32 is the exact chain sum ((x0 + x1) + x2) + …
func chainF32(xs [][]float32) []float32 {
	out := slices.Clone(xs[0])
	for _, x := range xs[1:] {
		for i := range out {
			out[i] += x[i]
		}
	}
	return out
}

// TestPowerSGDExactOnLowRank: replicas whose gradients share a rank-r
// column space (so their sum has rank r) get the sum back exactly (to
// float rounding) once the warm start has caught the space — one power
// iteration with a Gaussian Q already does — and keep it on later steps;
// every replica holds the same bits; the wire carries (rows+cols)·r values
// a matrix instead of rows·cols. A rank-2r sum is not exact at rank r, but
// the warm-started iterations bring its error down.
func TestPowerSGDExactOnLowRank(t *testing.T) {
	const R, rows, cols, r = 3, 96, 64, 4
	a := gaussian(1, rows*r, 1)
	mk := func(extra int) [][][]float32 {
		ms := make([][][]float32, R)
		for w := range ms {
			b := gaussian(uint64(10+w), r*cols, 1)
			m := make([]float32, rows*cols)
			mulAB(m, a, b, rows, r, cols)
			if extra > 0 { // a second rank-r part of a tenth the size
				m2 := lowRankMatrix(uint64(20+w), rows, cols, extra)
				for i := range m {
					m[i] += 0.1 * m2[i]
				}
			}
			ms[w] = [][]float32{m}
		}
		return ms
	}
	for _, extra := range []int{0, r} {
		t.Run(fmt.Sprintf("rank=%d", r+extra), func(t *testing.T) {
			g := mk(extra)
			want := chainF32([][]float32{g[0][0], g[1][0], g[2][0]})
			ss := make([]*PowerSGD, R)
			for w := range ss {
				var err error
				if ss[w], err = NewPowerSGD([]Matrix{{Rows: rows, Cols: cols, Key: "m"}}, r, false, 42); err != nil {
					t.Fatal(err)
				}
			}
			if !ss[0].LowRank(0) || ss[0].PLen() != rows*r || ss[0].QLen() != cols*r {
				t.Fatalf("low-rank %v, P %d, Q %d values: want factors of %d and %d", ss[0].LowRank(0), ss[0].PLen(), ss[0].QLen(), rows*r, cols*r)
			}
			var errs []float64
			for step := range 6 {
				ms := mk(extra)
				psgdSum(t, ss, ms, step)
				for w := 1; w < R; w++ {
					for i, v := range ms[w][0] {
						if math.Float32bits(v) != math.Float32bits(ms[0][0][i]) {
							t.Fatalf("step %d: replica %d holds %v at %d, replica 0 %v", step, w, v, i, ms[0][0][i])
						}
					}
				}
				errs = append(errs, relErr(ms[0][0], want))
			}
			t.Logf("relative error by step: %.3g", errs)
			if extra == 0 {
				for step, e := range errs[1:] {
					if e > 1e-5 {
						t.Errorf("step %d: relative error %.3g on a rank-%d sum, want ≤ 1e-5", step+1, e, r)
					}
				}
			} else if !(errs[5] < errs[0]) || errs[5] > 0.2 {
				t.Errorf("rank-%d sum: error %.3g after 6 warm-started steps vs %.3g after 1: want lower, and under the 0.1-sized part", r+extra, errs[5], errs[0])
			}
		})
	}
}

// TestPowerSGDFeedbackConserves: with error feedback the approximations
// plus the replicas' residuals add up to every gradient sent; a matrix too
// small to gain from factors and a redone step change nothing of that.
func TestPowerSGDFeedbackConserves(t *testing.T) {
	const R, T = 2, 15
	mats := []Matrix{{Rows: 48, Cols: 40, Key: "w"}, {Rows: 4, Cols: 4, Key: "small"}}
	ss := make([]*PowerSGD, R)
	for w := range ss {
		var err error
		if ss[w], err = NewPowerSGD(mats, 2, true, 3); err != nil {
			t.Fatal(err)
		}
	}
	if ss[0].LowRank(1) {
		t.Fatal("a 4×4 matrix at rank 2 is not smaller as factors (16 values either way), yet it is low-rank")
	}
	n := 48 * 40
	want, have := make([]float64, n), make([]float64, n)
	for step := range T {
		ms := make([][][]float32, R)
		for w := range ms {
			ms[w] = [][]float32{gaussian(uint64(50*step+w), n, 1), gaussian(9, 16, 1)}
			for i, v := range ms[w][0] {
				want[i] += float64(v)
			}
		}
		if step == 4 {
			// A first attempt that stops after P: the redo starts over.
			for w, s := range ss {
				s.Begin(step)
				if err := s.P([][]float32{slices.Clone(ms[w][0]), ms[w][1]}, make([]float32, s.PLen())); err != nil {
					t.Fatal(err)
				}
			}
		}
		psgdSum(t, ss, ms, step)
		for i, v := range ms[0][0] {
			have[i] += float64(v)
		}
	}
	var num, den, res float64
	for i := range want {
		h := have[i]
		for _, s := range ss {
			h += float64(s.Residual(0)[i])
			res += float64(s.Residual(0)[i]) * float64(s.Residual(0)[i])
		}
		num += (h - want[i]) * (h - want[i])
		den += want[i] * want[i]
	}
	if gap := math.Sqrt(num / den); gap > 1e-5 {
		t.Errorf("Σ approximations + Σ residuals is %.3g relative from Σ gradients, want ≤ 1e-5", gap)
	}
	if res == 0 {
		t.Error("residuals are all zero: a rank-2 sum of Gaussian matrices cannot be exact")
	}
	if ss[0].Residual(1) != nil {
		t.Error("a matrix sent whole has a residual")
	}
}

// TestPowerSGDRevivesZeroColumns: an all-zero gradient leaves Q zero; the
// next step's warm start is drawn again, the same on every replica, so the
// rank does not collapse for good.
func TestPowerSGDRevivesZeroColumns(t *testing.T) {
	mats := []Matrix{{Rows: 20, Cols: 30, Key: "m"}}
	a, _ := NewPowerSGD(mats, 3, true, 5)
	b, _ := NewPowerSGD(mats, 3, true, 5)
	zero := [][][]float32{{make([]float32, 600)}, {make([]float32, 600)}}
	psgdSum(t, []*PowerSGD{a, b}, zero, 0)
	for _, s := range []*PowerSGD{a, b} {
		s.Begin(1)
	}
	if !slices.Equal(a.mats[0].qIn, b.mats[0].qIn) {
		t.Fatal("the replicas drew different warm starts")
	}
	var norm float64
	for _, v := range a.mats[0].qIn {
		norm += float64(v) * float64(v)
	}
	if norm == 0 {
		t.Fatal("Q stayed zero after an all-zero gradient")
	}
	g := lowRankMatrix(2, 20, 30, 3)
	ms := [][][]float32{{slices.Clone(g)}, {make([]float32, 600)}}
	psgdSum(t, []*PowerSGD{a, b}, ms, 1)
	if e := relErr(ms[0][0], g); e > 1e-5 {
		t.Errorf("after the revival a rank-3 sum comes back %.3g relative from exact", e)
	}
}

func TestReduceConfig(t *testing.T) {
	ok := []ReduceConfig{
		DefaultReduceConfig(),
		{Method: ReduceFP16, ErrorFeedback: true},
		{Method: ReduceInt8},
		{Method: ReducePowerSGD, ErrorFeedback: true},
		{Method: ReducePowerSGD, Rank: 16, ErrorFeedback: true},
	}
	for _, c := range ok {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	for _, tc := range []struct {
		c   ReduceConfig
		key string
	}{
		{ReduceConfig{}, "compression.replicas.method"},
		{ReduceConfig{Method: ReduceInt8, Rank: 4}, "compression.replicas.rank"},
		{ReduceConfig{Method: ReducePowerSGD, Rank: -1}, "compression.replicas.rank"},
		{ReduceConfig{Method: ReducePowerSGD, Rank: maxRank + 1}, "compression.replicas.rank"},
	} {
		var ke *KeyError
		if err := tc.c.Validate(); !errors.As(err, &ke) || ke.Key != tc.key || !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want a KeyError on %s", tc.c, err, tc.key)
		}
	}
	for _, m := range []ReduceMethod{ReduceNone, ReduceFP16, ReduceInt8, ReducePowerSGD} {
		if got, err := ParseReduceMethod(m.String()); err != nil || got != m {
			t.Errorf("ParseReduceMethod(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseReduceMethod("bf16"); err == nil {
		t.Error("bf16 parsed as a replicas method")
	}
	if l := (ReduceConfig{Method: ReducePowerSGD}).Label(); l != "powersgd r=4 -ef" {
		t.Errorf("label %q", l)
	}
}
