package compression

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// TestAutoRankTranscript replays a bandwidth trace (a 60 Mbps link that
// drops to 8 Mbps, then rises to 160 Mbps, with ±10% noise) through the
// controller and compares every decision with testdata/autorank.txt.
// Regenerate with: go test ./compression -run Transcript -update
func TestAutoRankTranscript(t *testing.T) {
	const rows, cols, comp = 2048, 256, 0.1
	a, err := NewAutoRank(DefaultAutoRankConfig(DefaultLadder(cols, 256)), 0)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "# rows=%d cols=%d compute=%.0fms margin=0.8 hysteresis=0.2 hold=5\n", rows, cols, comp*1e3)
	g := newRNG(9, "trace")
	phases := []struct {
		mbps  float64
		steps int
	}{{60, 30}, {8, 15}, {160, 30}}
	step := 0
	for _, ph := range phases {
		fmt.Fprintf(&out, "step %d: link %.0f Mbps\n", step, ph.mbps)
		for i := 0; i < ph.steps; i++ {
			bw := ph.mbps * 1e6 / 8 * (0.9 + 0.2*g.uniform())
			s, ev := a.Observe(Observation{BytesPerSecond: bw, ComputeSeconds: comp, Rows: rows, Cols: cols})
			if ev != nil {
				fmt.Fprintf(&out, "step %d: %v -> %v (%d B/token): %s\n", step, ev.Old, ev.New, s.PayloadBytes(rows, cols)/rows, ev.Reason)
			}
			step++
		}
		fmt.Fprintf(&out, "step %d: settled at %v\n", step, a.Current())
	}
	path := filepath.Join("testdata", "autorank.txt")
	if *update {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if out.String() != string(want) {
		t.Errorf("transcript changed; got:\n%s\nwant:\n%s", out.String(), want)
	}
}
