package report

import (
	"strings"
	"testing"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
)

// TestParetoAxisIsNotSquashed: a sweep where one codec is far off (topk
// at +62%) and the others are within a few percent of none: the Pareto
// plot's gap axis is set by the near ones (in percent, with the 3% bar in
// view), and the far point sits on the top edge, labelled with its value.
func TestParetoAxisIsNotSquashed(t *testing.T) {
	ys, labels, top, _ := paretoAxis([]float64{2, 2.5, 62, -0.5}, []string{"tc", "tc-2", "topk", "fp16"})
	if top > 4 || top < 3 {
		t.Errorf("gap axis tops out at %.2f%%: want it set by the near codecs (2.5%%) and the 3%% bar", top)
	}
	if ys[2] != top || labels[2] != "topk (+62%, off scale)" {
		t.Errorf("topk drawn at %.2f as %q: want it on the top edge (%.2f), labelled with its gap", ys[2], labels[2], top)
	}
	if ys[0] != 2 || ys[3] != -0.5 || strings.Contains(labels[0]+labels[1]+labels[3], "off scale") {
		t.Errorf("near points %v %q: want them where they are, labels unchanged", ys, labels)
	}

	// And the figure is drawn from runs, gaps per seed against that seed's none.
	mk := func(label string, m compression.Method, seed uint64, bytesFwd, loss float64) Run {
		c := config.Default()
		c.Run.Seed = config.Seed(seed)
		c.Model.NEmbd = 256
		c.Compression.Method = m
		return Run{Label: label, Config: c, Summary: metrics.Summary{WireBytesPerTokenForward: bytesFwd, FinalValLoss: loss}}
	}
	runs := []Run{
		mk("none", compression.MethodNone, 1, 1024, 2.0),
		mk("none-2", compression.MethodNone, 2, 1024, 2.1),
		mk("tc", compression.MethodSubspaceTC, 1, 8, 2.04),
		mk("tc-2", compression.MethodSubspaceTC, 2, 8, 2.1525),
		mk("topk", compression.MethodTopK, 1, 200, 3.24),
	}
	f, err := paretoFigure(runs, newStyles(runs))
	if err != nil || f == nil {
		t.Fatalf("figure %v, err %v", f, err)
	}
	if f.p.Y.Max > 5 {
		t.Errorf("the figure's gap axis tops out at %.2f%%: topk squashed it", f.p.Y.Max)
	}
}
