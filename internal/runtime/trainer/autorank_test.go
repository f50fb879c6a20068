package trainer

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/narrowband/narrowband/compression"
)

// rankChanges reads the rank_change events of a run, in order.
func rankChanges(t *testing.T, dir string) []map[string]any {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev struct {
			Type, Kind string
			Detail     map[string]any
		}
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Type == "event" && ev.Kind == "rank_change" {
			out = append(out, ev.Detail)
		}
	}
	return out
}

// TestAutoRankFollowsTheLink: with compression.rank = "auto" the lowrank
// codec climbs its ladder on a fast link and stays at the cheapest rung on
// a link too slow for it; every change is an event in metrics.jsonl.
func TestAutoRankFollowsTheLink(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two shaped pipelines")
	}
	c := tinyConfig(t)
	c.Run.Steps = 30
	c.Model.NLayer = 2
	c.Pipeline.Stages = 2
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Train.EvalInterval = 0
	c.Compression.Method = compression.MethodLowRank
	c.Compression.Rank = compression.RankAuto
	c.Compression.Precision = compression.FP16

	fast := t.TempDir()
	runTiny(t, c, fast)
	up := rankChanges(t, fast)
	if len(up) == 0 {
		t.Fatal("no rank change on an unlimited link: the controller never left the cheapest rung")
	}
	last := up[len(up)-1]
	t.Logf("unlimited link: %d changes, last %v", len(up), last)

	c.Network.BandwidthMbps = 0.5
	c.Network.LatencyMs = 5
	slow := t.TempDir()
	runTiny(t, c, slow)
	// At 0.5 Mbps even rank 4 (a ~0.8 kB message, 13 ms) takes far longer
	// than a micro-batch's compute: the controller must never climb.
	for _, ev := range rankChanges(t, slow) {
		if r, _ := ev["new_rank"].(float64); r > 4 {
			t.Errorf("0.5 Mbps link: stepped up to %v", ev)
		}
	}
	climbed := false
	for _, ev := range up {
		if r, _ := ev["new_rank"].(float64); r > 4 {
			climbed = true
		}
	}
	if !climbed {
		t.Error("unlimited link: never above rank 4")
	}
}
