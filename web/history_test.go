package web

import "testing"

func TestHistoryThin(t *testing.T) {
	for _, tc := range []struct {
		name     string
		max, n   int
		valEvery int
	}{
		{"no-vals", 100, 10000, 0},
		{"sparse-vals", 100, 10000, 500},
		{"every-step-val", 100, 10000, 1},
		{"tiny", 4, 1000, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := history{max: tc.max}
			for i := 1; i <= tc.n; i++ {
				h.add(histEntry{step: i, val: tc.valEvery > 0 && i%tc.valEvery == 0})
				if len(h.entries) > tc.max {
					t.Fatalf("after %d steps the history holds %d > max %d", i, len(h.entries), tc.max)
				}
			}
			e := h.entries
			if e[0].step != 1 || e[len(e)-1].step != tc.n {
				t.Errorf("history covers %d..%d, want 1..%d", e[0].step, e[len(e)-1].step, tc.n)
			}
			for i := 1; i < len(e); i++ {
				if e[i].step <= e[i-1].step {
					t.Fatalf("out of order at %d", i)
				}
			}
			if tc.valEvery == 500 {
				vals := 0
				for _, x := range e {
					if x.val {
						vals++
					}
				}
				if vals != tc.n/tc.valEvery {
					t.Errorf("kept %d of %d val points", vals, tc.n/tc.valEvery)
				}
			}
			if len(e) < tc.max/2 {
				t.Errorf("history holds %d entries; thinning should keep at least half of max %d", len(e), tc.max)
			}
		})
	}
}

func TestRing(t *testing.T) {
	r := newRing[int](3)
	if got := r.appendTo(nil); len(got) != 0 {
		t.Errorf("empty ring = %v", got)
	}
	for i := 1; i <= 5; i++ {
		r.push(i)
	}
	got := r.appendTo(nil)
	if len(got) != 3 || got[0] != 3 || got[2] != 5 {
		t.Errorf("ring after 1..5 = %v, want [3 4 5]", got)
	}
}
