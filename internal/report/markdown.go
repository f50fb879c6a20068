package report

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/narrowband/narrowband/compression"
)

// title names the report after what was loaded: the sweep, the single run,
// or nothing in particular.
func title(runs []Run) string {
	sweeps := map[string]bool{}
	for _, r := range runs {
		sweeps[r.Sweep] = true
	}
	if len(sweeps) == 1 && runs[0].Sweep != "" {
		name, _, _ := strings.Cut(runs[0].Config.Run.Name, "/")
		if name == "" {
			name = filepath.Base(filepath.Clean(runs[0].Sweep))
		}
		return "narrowband sweep: " + name
	}
	if len(runs) == 1 {
		return "narrowband run: " + runs[0].Label
	}
	return fmt.Sprintf("narrowband report: %d runs", len(runs))
}

// markdown renders report.md: the summary table, the plots, then notes.
func markdown(runs []Run, figs []*figure, errs []error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", title(runs))
	// The gap column only means something with a `none` run and another
	// codec to compare with it.
	none, other := false, false
	for _, r := range runs {
		if r.Config.Compression.Method == compression.MethodNone {
			none = true
		} else {
			other = true
		}
	}
	hasNone := none && other
	hdr := []string{"run", "codec", "final val loss (" + lossUnit(runs) + ")"}
	if tokenized(runs) {
		// The figure that compares runs with different tokenizers.
		hdr = append(hdr, "per byte")
	}
	hdr = append(hdr, "tokens/s", "bytes/token fwd", "bytes/token bwd", "ratio vs fp32 fwd / bwd")
	if hasNone {
		hdr = append(hdr, "gap vs none")
	}
	hdr = append(hdr, "bubble", "network wait", "wall s")
	fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(hdr, " | "), strings.Repeat("---|", len(hdr)))
	derived := false
	for _, r := range runs {
		s := r.Summary
		label := cell(r.Label)
		if r.Derived {
			label += " \\*"
			derived = true
		}
		row := []string{label, cell(r.Codec()), num(s.FinalValLoss, "%.4f")}
		if tokenized(runs) {
			perByte := s.FinalValLossPerByte
			if perByte == 0 && r.Config.Data.Bytes() {
				perByte = s.FinalValLoss // a byte run from before the field
			}
			row = append(row, num(perByte, "%.4f"))
		}
		row = append(row, num(s.TokensPerSecond, "%.0f"))
		if r.Config.Pipeline.Stages > 1 {
			row = append(row, num(s.WireBytesPerTokenForward, "%.1f"), num(s.WireBytesPerTokenBackward, "%.1f"),
				num(ratioVsFP32(r), "%.1f×")+" / "+num(ratioVsFP32Backward(r), "%.1f×"))
		} else {
			row = append(row, "—", "—", "—") // one stage: nothing crosses a link
		}
		if hasNone {
			gap := "—"
			if ref, ok := reference(runs, r); ok && finite(s.FinalValLoss) {
				gap = fmtGap(s.FinalValLoss - ref.Summary.FinalValLoss)
				if ref.Summary.FinalValLoss > 0 {
					gap += fmt.Sprintf(" (%+.2f%%)", 100*(s.FinalValLoss-ref.Summary.FinalValLoss)/ref.Summary.FinalValLoss)
				}
			}
			row = append(row, gap)
		}
		row = append(row, pct(s.BubbleFraction), pct(s.NetworkWaitFraction), num(s.WallSeconds, "%.1f"))
		fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
	}
	b.WriteString("\n")
	b.WriteString("Bytes per token are per link and direction; ratio vs fp32 is 4·n_embd bytes over the bytes per token, each way.")
	if hasNone {
		b.WriteString(" The gap is the final held-out loss minus that of the `none` run trained the same way (negative: better).")
	}
	b.WriteString(" Bubble is the share of stage time spent idle; network wait the share spent waiting on a link.\n")
	if derived {
		b.WriteString("\n\\* no summary.json (run unfinished?): figures derived from metrics.jsonl.\n")
	}
	if len(figs) > 0 {
		b.WriteString("\n## Plots\n")
		for _, f := range figs {
			fmt.Fprintf(&b, "\n### %s\n\n![%s](%s.png)\n\n[SVG](%s.svg)\n", f.title, f.title, f.name, f.name)
		}
	}
	var notes []string
	for _, r := range runs {
		for _, w := range r.Warnings {
			notes = append(notes, r.Label+": "+w)
		}
	}
	for _, e := range errs {
		notes = append(notes, "plot skipped: "+e.Error())
	}
	if len(notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", cell(n))
		}
	}
	b.WriteString("\n## Runs\n\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "- %s: `%s`\n", cell(r.Label), r.Dir)
	}
	return b.String()
}

// cell makes s safe inside a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

func num(v float64, format string) string {
	if !finite(v) {
		return "—"
	}
	return fmt.Sprintf(format, v)
}

func pct(v float64) string {
	if !finite(v) {
		return "—"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

// fmtGap prints a loss gap with its sign, and a gap that rounds to zero as
// "+0.0000" rather than "-0.0000", which reads as a (tiny) improvement.
func fmtGap(g float64) string {
	g = math.Round(g*1e4) / 1e4
	if g == 0 {
		g = 0 // drops the sign of -0
	}
	return fmt.Sprintf("%+.4f", g)
}
