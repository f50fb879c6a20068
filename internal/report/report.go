package report

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/narrowband/narrowband/internal/metrics"
)

// ReportFile is the Markdown report Write produces.
const ReportFile = "report.md"

// Plot loads dirs (run or sweep folders) and writes their plots and report
// into out. It is what `narrowband plot DIR... --out OUT` and the trainer
// at the end of a run or sweep call.
func Plot(out string, dirs ...string) ([]string, error) {
	runs, err := Load(dirs...)
	if err != nil {
		return nil, err
	}
	return Write(out, runs)
}

// Write draws every plot the runs have data for into outDir, as PNG and SVG,
// then report.md, and returns the paths written. A plot with no data is
// skipped; a plot that fails to draw is skipped too and its error returned
// (joined with any others) after everything else has been written, so one
// bad plot never costs the rest of the report.
func Write(outDir string, runs []Run) (files []string, err error) {
	if len(runs) == 0 {
		return nil, errors.New("report: no runs to plot")
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("report: create output folder: %w", err)
	}
	st := newStyles(runs)
	type build func() (*figure, error)
	builds := []build{
		func() (*figure, error) {
			return lossFigure(runs, st, "loss_vs_tokens", "Loss vs tokens seen", "training tokens (tokens)",
				func(r metrics.StepRecord) float64 { return float64(r.Tokens) })
		},
		func() (*figure, error) {
			return lossFigure(runs, st, "loss_vs_time", "Loss vs wall-clock time", "wall-clock time (seconds)",
				func(r metrics.StepRecord) float64 { return r.WallSeconds })
		},
		func() (*figure, error) { return bandwidthFigure(runs, st) },
		func() (*figure, error) { return wireFigure(runs, st) },
		func() (*figure, error) { return paretoFigure(runs, st) },
	}
	used := map[string]bool{}
	for _, r := range runs {
		builds = append(builds, func() (*figure, error) { return timelineFigure(r, uniqueName("timeline_"+slug(r.Label), used)) })
	}
	var errs []error
	var figs []*figure
	for _, b := range builds {
		f, err := safeBuild(b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if f == nil {
			continue
		}
		fs, err := f.save(outDir)
		files = append(files, fs...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		figs = append(figs, f)
	}
	md := markdown(runs, figs, errs)
	path := filepath.Join(outDir, ReportFile)
	if err := metrics.WriteFileAtomic(path, []byte(md)); err != nil {
		return files, fmt.Errorf("report: %w", err)
	}
	files = append(files, path)
	if len(errs) > 0 {
		return files, fmt.Errorf("report: some plots were skipped: %w", errors.Join(errs...))
	}
	return files, nil
}

// safeBuild runs a figure builder, turning a gonum/plot panic on input we
// failed to filter into an error (see figure.save).
func safeBuild(b func() (*figure, error)) (f *figure, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("building a plot failed: %v", r)
		}
	}()
	return b()
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._=-]+`)

// slug makes a label safe as a file name on every OS.
func slug(s string) string {
	s = unsafeChars.ReplaceAllString(s, "_")
	s = strings.Trim(s, "._")
	if len(s) > 80 {
		s = s[:80]
	}
	if s == "" {
		s = "run"
	}
	return s
}

func uniqueName(name string, used map[string]bool) string {
	n := name
	for i := 2; used[n]; i++ {
		n = fmt.Sprintf("%s_%d", name, i)
	}
	used[n] = true
	return n
}
