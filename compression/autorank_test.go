package compression

import (
	"strings"
	"testing"
)

func TestAutoRank(t *testing.T) {
	const rows, cols = 2048, 256
	ladder := DefaultLadder(cols, 256)
	a, err := NewAutoRank(DefaultAutoRankConfig(ladder), 0)
	if err != nil {
		t.Fatal(err)
	}
	obs := func(bw, comp float64) (Setting, *RankEvent) {
		return a.Observe(Observation{BytesPerSecond: bw, ComputeSeconds: comp, Rows: rows, Cols: cols})
	}
	fits := func(s Setting, bw, comp float64) bool {
		return float64(s.PayloadBytes(rows, cols))/bw <= 0.8*comp
	}

	// 60 Mbps = 7.5 MB/s, 100 ms compute per micro-batch.
	const bw, comp = 7.5e6, 0.1
	var events []*RankEvent
	var s Setting
	for i := 0; i < 40; i++ {
		var ev *RankEvent
		s, ev = obs(bw, comp)
		if ev != nil {
			events = append(events, ev)
			if ev.Old == ev.New || ev.Reason == "" {
				t.Errorf("event %+v: no change or no reason", ev)
			}
		}
	}
	if !fits(s, bw, comp) {
		t.Errorf("settled on %v which does not fit: %d bytes at %.1f MB/s > 80 ms", s, s.PayloadBytes(rows, cols), bw/1e6)
	}
	// It should have climbed as far as the hysteresis allows: the next
	// rung up would not fit with the 20% hysteresis.
	idx := indexOf(ladder, s)
	if idx+1 < len(ladder) && float64(ladder[idx+1].PayloadBytes(rows, cols))/bw <= 0.8*0.8*comp {
		t.Errorf("stopped at %v although %v fits with hysteresis", s, ladder[idx+1])
	}
	if len(events) == 0 {
		t.Fatalf("never left the bottom rung")
	}
	t.Logf("settled at %v after %d events; last: %s", s, len(events), events[len(events)-1].Reason)

	// Steady measurements do not flap.
	for i := 0; i < 50; i++ {
		if _, ev := obs(bw*(1+0.05*float64(i%2)), comp); ev != nil {
			t.Fatalf("flapped under ±5%% noise: %+v", ev)
		}
	}

	// The link slows 10×: step down immediately, to something that fits.
	var down *RankEvent
	for i := 0; i < 10 && down == nil; i++ {
		s, down = obs(bw/10, comp)
	}
	if down == nil || indexOf(ladder, down.New) >= idx {
		t.Fatalf("no step down after the link slowed: %+v", down)
	}
	if !strings.Contains(down.Reason, "budget") {
		t.Errorf("step-down reason %q does not explain the budget", down.Reason)
	}

	// Garbage measurements are ignored.
	before := a.Current()
	for _, o := range []Observation{{0, 0.1, rows, cols}, {bw, -1, rows, cols}, {bw, 0.1, 0, cols}} {
		if got, ev := a.Observe(o); ev != nil || got != before {
			t.Errorf("observation %+v changed the setting", o)
		}
	}
}

func TestAutoRankConfigValidate(t *testing.T) {
	bad := []AutoRankConfig{
		{},
		DefaultAutoRankConfig([]Setting{{16, FP16}, {8, FP16}}),
		DefaultAutoRankConfig([]Setting{{0, FP16}}),
		{Ladder: []Setting{{4, FP16}}, Margin: 0, Smoothing: 0.3},
		{Ladder: []Setting{{4, FP16}}, Margin: 0.8, Hysteresis: 1, Smoothing: 0.3},
	}
	for i, c := range bad {
		if _, err := NewAutoRank(c, 0); err == nil {
			t.Errorf("config %d accepted: %+v", i, c)
		}
	}
}

func indexOf(l []Setting, s Setting) int {
	for i, x := range l {
		if x == s {
			return i
		}
	}
	return -1
}
