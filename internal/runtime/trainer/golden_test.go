package trainer

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/golden_*.txt from this build")

// goldenRuns are the quickstart experiment (experiments/quickstart.toml,
// its model, optimizer, split, schedule and codec as they are) cut short,
// on a corpus frozen in testdata, and two neighbours of it that reach the
// code paths the quickstart does not: one process (the local engine), and
// the subspace codec under GPipe. The network profile is dropped: it changes
// timing, never values.
var goldenRuns = []struct {
	name string
	set  []string
}{
	{"quickstart", nil},
	{"quickstart_local", []string{"pipeline.stages=1"}},
	{"quickstart_subspace", []string{"pipeline.schedule=gpipe", "compression.method=subspace", "compression.rank=48", "compression.precision=int4"}},
}

// TestGoldenLossCurves runs each golden run and compares every train and
// held-out loss, bit for bit, with the curve recorded in testdata before the
// runtime was split into packages: moving code must not move a single bit.
// Regenerate (only for a deliberate change of the math) with
// `go test -run TestGoldenLossCurves -update`.
func TestGoldenLossCurves(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three short runs of the quickstart model")
	}
	for _, g := range goldenRuns {
		t.Run(g.name, func(t *testing.T) {
			set := append([]string{
				"run.steps=6", "train.eval_interval=3", "train.eval_batches=1",
				"data.path=" + filepath.Join("testdata", "golden_corpus.txt"), "data.val_fraction=0.1",
				"web.addr=", "network.bandwidth_mbps=0", "network.latency_ms=0",
			}, g.set...)
			c, err := config.Load(filepath.Join("..", "..", "..", "experiments", "quickstart.toml"), set)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			runTiny(t, c, dir)
			recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "# %s: step, train loss, held-out loss (float64 bits and value)\n", g.name)
			for _, r := range recs {
				fmt.Fprintf(&b, "%d train %016x %.17g\n", r.Step, math.Float64bits(r.Loss), r.Loss)
				if r.ValLoss != nil {
					fmt.Fprintf(&b, "%d val %016x %.17g\n", r.Step, math.Float64bits(*r.ValLoss), *r.ValLoss)
				}
			}
			path := filepath.Join("testdata", "golden_"+g.name+".txt")
			if *updateGolden {
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (record it with -update)", err)
			}
			if got := b.String(); got != string(want) {
				t.Errorf("loss curve of %s changed:\n--- got\n%s--- recorded\n%s", g.name, got, want)
			}
		})
	}
}
