package scheduler

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

func TestAssign(t *testing.T) {
	for _, tc := range []struct {
		name      string
		nLayer, S int
		c         Costs
		want      []int   // blocks per stage; nil when several splits are optimal
		wantMax   float64 // cost of the slowest stage
	}{
		{"uniform", 8, 4, Costs{Block: 1}, []int{2, 2, 2, 2}, 2},
		{"one stage", 5, 1, Costs{Block: 1, Head: 3}, []int{5}, 8},
		{"one block each", 3, 3, Costs{Block: 1, Head: 9}, []int{1, 1, 1}, 10},
		// The head costs two blocks; 14 units over 4 stages cannot beat 4.
		{"heavy head", 12, 4, Costs{Block: 1, Head: 2}, nil, 4},
		{"very heavy head", 12, 4, Costs{Block: 1, Head: 5}, []int{3, 4, 4, 1}, 6}, // ties: earlier stages lighter
		{"embedding and head", 10, 3, Costs{Block: 1, Embedding: 1, Head: 1}, []int{3, 4, 3}, 4},
		// Measured per-block times: a slow block gets a stage of its own.
		{"per block", 6, 3, Costs{PerBlock: []float64{1, 1, 1, 5, 1, 1}}, []int{3, 1, 2}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Assign(tc.nLayer, tc.S, tc.c)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for _, x := range r {
				got = append(got, x.Len())
			}
			checkContiguous(t, r, tc.nLayer)
			if mx := maxOf(StageCosts(r, tc.c)); mx != tc.wantMax {
				t.Fatalf("split %v: slowest stage costs %v, want %v", got, mx, tc.wantMax)
			}
			if tc.want == nil {
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Assign = %v (%v), want %v", got, r, tc.want)
			}
		})
	}
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}

func checkContiguous(t *testing.T, r []Range, nLayer int) {
	t.Helper()
	lo := 0
	for i, x := range r {
		if x.Lo != lo || x.Hi <= x.Lo {
			t.Fatalf("stage %d range %v not contiguous/non-empty in %v", i, x, r)
		}
		lo = x.Hi
	}
	if lo != nLayer {
		t.Fatalf("ranges %v end at %d, want %d", r, lo, nLayer)
	}
}

// Assign's slowest stage is as fast as the best of all contiguous splits,
// checked by brute force on seeded random costs.
func TestAssignOptimal(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		nLayer := 1 + rng.IntN(9)
		S := 1 + rng.IntN(nLayer)
		c := Costs{PerBlock: make([]float64, nLayer), Embedding: rng.Float64() * 2, Head: rng.Float64() * 4}
		for i := range c.PerBlock {
			c.PerBlock[i] = rng.Float64()
		}
		r, err := Assign(nLayer, S, c)
		if err != nil {
			t.Fatal(err)
		}
		checkContiguous(t, r, nLayer)
		got := maxOf(StageCosts(r, c))
		best := bruteForce(nLayer, S, c)
		if math.Abs(got-best) > 1e-12 {
			t.Fatalf("nLayer=%d S=%d costs %+v: Assign max %v, best %v", nLayer, S, c, got, best)
		}
	}
}

func bruteForce(nLayer, S int, c Costs) float64 {
	best := math.Inf(1)
	var rec func(stage, lo int, r []Range)
	rec = func(stage, lo int, r []Range) {
		if stage == S-1 {
			r = append(r, Range{lo, nLayer})
			best = math.Min(best, maxOf(StageCosts(r, c)))
			return
		}
		for hi := lo + 1; hi <= nLayer-(S-1-stage); hi++ {
			rec(stage+1, hi, append(r, Range{lo, hi}))
		}
	}
	rec(0, 0, nil)
	return best
}

func TestAssignErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		nLayer, S int
		c         Costs
	}{
		"more stages than layers": {2, 3, Costs{Block: 1}},
		"zero stages":             {4, 0, Costs{Block: 1}},
		"negative block":          {4, 2, Costs{Block: -1}},
		"nan head":                {4, 2, Costs{Block: 1, Head: math.NaN()}},
		"inf embedding":           {4, 2, Costs{Block: 1, Embedding: math.Inf(1)}},
		"per block length":        {4, 2, Costs{PerBlock: []float64{1, 1}}},
		"per block nan":           {2, 2, Costs{PerBlock: []float64{1, math.NaN()}}},
	} {
		if _, err := Assign(tc.nLayer, tc.S, tc.c); !errors.Is(err, ErrBadSplit) {
			t.Errorf("%s: Assign = %v, want ErrBadSplit", name, err)
		}
	}
}

func TestSplit(t *testing.T) {
	r, err := Split(8, []int{3, 3, 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Range{{0, 3}, {3, 6}, {6, 8}}; !reflect.DeepEqual(r, want) {
		t.Fatalf("Split = %v, want %v", r, want)
	}
	for _, counts := range [][]int{nil, {}, {3, 3, 3}, {4, 0, 4}, {9, -1}, {-1, 9}, {1, 1}} {
		if _, err := Split(8, counts); !errors.Is(err, ErrBadSplit) {
			t.Errorf("Split(8, %v) = %v, want ErrBadSplit", counts, err)
		}
	}
}

func TestGPTCosts(t *testing.T) {
	// GPT-2 small: the head is about 5.5 blocks' worth of FLOPs.
	c := GPTCosts(768, 50257)
	if c.Head < 5 || c.Head > 6 || c.Block != 1 {
		t.Fatalf("GPTCosts(768, 50257) = %+v, want head ≈ 5.5 blocks", c)
	}
	// Byte vocabulary at d=256: the head is cheap (1/12 block).
	if c := GPTCosts(256, 256); math.Abs(c.Head-1.0/12) > 1e-12 {
		t.Fatalf("GPTCosts(256, 256).Head = %v, want 1/12", c.Head)
	}
}

func TestLayoutLinks(t *testing.T) {
	for _, tc := range []struct {
		ranges []Range
		nb     [][]int
		tied   []int
	}{
		{[]Range{{0, 4}}, [][]int{nil}, []int{-1}},
		{[]Range{{0, 1}, {1, 4}}, [][]int{{1}, {0}}, []int{1, 0}},
		{[]Range{{0, 1}, {1, 2}, {2, 3}, {3, 4}}, [][]int{{1, 3}, {0, 2}, {1, 3}, {2, 0}}, []int{3, -1, -1, 0}},
	} {
		l, err := NewLayout(tc.ranges)
		if err != nil {
			t.Fatal(err)
		}
		for i := range tc.ranges {
			if got := l.Neighbours(i); !slices.Equal(got, tc.nb[i]) {
				t.Errorf("S=%d stage %d: neighbours %v, want %v", l.Stages(), i, got, tc.nb[i])
			}
			if got := l.Tied(i); got != tc.tied[i] {
				t.Errorf("S=%d stage %d: tied end %d, want %d", l.Stages(), i, got, tc.tied[i])
			}
		}
	}
	for _, bad := range [][]Range{nil, {{1, 2}}, {{0, 2}, {3, 4}}, {{0, 0}}} {
		if _, err := NewLayout(bad); err == nil {
			t.Errorf("NewLayout(%v) accepted a broken cut", bad)
		}
	}
}
