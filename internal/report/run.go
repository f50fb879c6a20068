package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
)

// Run is one run folder as read from disk.
type Run struct {
	Label string // unique among the loaded runs: sweep variant or run name
	Dir   string
	Sweep string // the sweep folder it came from, "" for a plain run

	Config   config.Config
	Steps    []metrics.StepRecord
	Events   []metrics.Event
	Summary  metrics.Summary
	Timeline []metrics.Span

	// Derived is true when summary.json was absent (a run still going or
	// killed) and Summary was computed from metrics.jsonl.
	Derived bool
	// Warnings are problems that did not stop the report (a truncated last
	// line, a missing summary); report.md lists them.
	Warnings []string
}

// Codec names what crossed the run's links, e.g. "none", "int8",
// "lowrank r=32", "subspace r=64 fp16", "topk 10% +ef +lz4" (+ef: error
// feedback on).
func (r Run) Codec() string { return r.Config.Compression.Label() }

// File names inside a run or sweep folder.
const (
	ConfigFile   = "config.toml"
	MetricsFile  = "metrics.jsonl"
	SummaryFile  = "summary.json"
	TimelineFile = "timeline.jsonl"
	SweepFile    = "sweep.json"
)

// ErrNotRun is returned for a folder that holds neither a run nor a sweep.
var ErrNotRun = errors.New("not a run or sweep folder (want metrics.jsonl, or sweep.json from a sweep); pass the folder a run or sweep wrote")

// Load reads each dir, which may be a run folder or a sweep folder (expanded
// into its runs, labelled by variant), in the order given. Labels are made
// unique across all dirs.
func Load(dirs ...string) ([]Run, error) {
	if len(dirs) == 0 {
		return nil, errors.New("report: no folders given; pass one or more run or sweep folders")
	}
	var runs []Run
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, SweepFile)); err == nil {
			rs, err := loadSweep(d)
			if err != nil {
				return nil, err
			}
			runs = append(runs, rs...)
			continue
		}
		if _, err := os.Stat(filepath.Join(d, MetricsFile)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("report: %s: %w", d, ErrNotRun)
			}
			return nil, fmt.Errorf("report: %w", err)
		}
		r, err := LoadRun(d)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	uniqueLabels(runs)
	return runs, nil
}

// LoadRun reads one run folder. metrics.jsonl and config.toml must exist;
// summary.json and timeline.jsonl may be missing.
func LoadRun(dir string) (Run, error) {
	r := Run{Dir: dir}
	cfgPath := filepath.Join(dir, ConfigFile)
	text, err := os.ReadFile(cfgPath)
	if err != nil {
		return r, fmt.Errorf("report: read %s: %w (every run folder holds its resolved config)", cfgPath, err)
	}
	if r.Config, err = config.Parse(string(text), cfgPath); err != nil {
		return r, fmt.Errorf("report: %w", err)
	}
	mPath := filepath.Join(dir, MetricsFile)
	b, err := os.ReadFile(mPath)
	if err != nil {
		return r, fmt.Errorf("report: read %s: %w", mPath, err)
	}
	var warn []string
	r.Steps, r.Events, warn, err = parseMetrics(b, mPath)
	if err != nil {
		return r, fmt.Errorf("report: %w", err)
	}
	r.Warnings = append(r.Warnings, warn...)

	sPath := filepath.Join(dir, SummaryFile)
	switch b, err := os.ReadFile(sPath); {
	case errors.Is(err, fs.ErrNotExist):
		r.Summary = deriveSummary(r.Config, r.Steps)
		r.Derived = true
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s is missing (run unfinished?): figures derived from %s", sPath, MetricsFile))
	case err != nil:
		return r, fmt.Errorf("report: read %s: %w", sPath, err)
	default:
		if err := json.Unmarshal(b, &r.Summary); err != nil {
			return r, fmt.Errorf("report: %s: %w", sPath, err)
		}
	}

	tPath := filepath.Join(dir, TimelineFile)
	switch b, err := os.ReadFile(tPath); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return r, fmt.Errorf("report: read %s: %w", tPath, err)
	default:
		r.Timeline, warn, err = parseTimeline(b, tPath)
		if err != nil {
			return r, fmt.Errorf("report: %w", err)
		}
		r.Warnings = append(r.Warnings, warn...)
	}

	r.Label = r.Summary.Name
	if r.Label == "" {
		r.Label = r.Config.Run.Name
	}
	if r.Label == "" || r.Label == config.Default().Run.Name {
		r.Label = filepath.Base(filepath.Clean(dir))
	}
	return r, nil
}

func loadSweep(dir string) ([]Run, error) {
	path := filepath.Join(dir, SweepFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("report: read %s: %w", path, err)
	}
	entries, err := parseSweep(b, path)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var runs []Run
	for i, e := range entries {
		rd := sweepRunDir(dir, e)
		if rd == "" {
			return nil, fmt.Errorf("report: %s: entry %d (variant %q): no run folder at %q or under %s; was the sweep moved without its run folders?", path, i+1, e.Variant, e.Dir, dir)
		}
		r, err := LoadRun(rd)
		if err != nil {
			return nil, err
		}
		r.Sweep = dir
		r.Label = shortVariant(e.Variant)
		if r.Label == "" {
			r.Label = filepath.Base(rd)
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// parseSweep decodes sweep.json.
func parseSweep(b []byte, name string) ([]metrics.SweepResult, error) {
	var entries []metrics.SweepResult
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, fmt.Errorf("%s: %w (want the JSON array a sweep writes)", name, err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%s: no runs listed", name)
	}
	return entries, nil
}

// sweepRunDir finds a variant's folder, preferring the one under the sweep
// folder (so a sweep that was copied or moved still loads) over the path
// recorded at sweep time.
func sweepRunDir(dir string, e metrics.SweepResult) string {
	var cands []string
	if e.Variant != "" && !strings.ContainsAny(e.Variant, `/\`) && e.Variant != ".." {
		cands = append(cands, filepath.Join(dir, e.Variant))
	}
	if e.Dir != "" {
		if base := filepath.Base(e.Dir); base != "." && base != ".." && base != string(filepath.Separator) {
			cands = append(cands, filepath.Join(dir, base))
		}
		cands = append(cands, e.Dir)
	}
	for _, c := range cands {
		if st, err := os.Stat(filepath.Join(c, MetricsFile)); err == nil && st.Mode().IsRegular() {
			return c
		}
	}
	return ""
}

// shortVariant drops the section from each key of a variant name:
// "compression.method=int8,network.bandwidth_mbps=60" → "method=int8,bandwidth_mbps=60".
func shortVariant(v string) string {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		if j := strings.LastIndexByte(k, '.'); j >= 0 {
			k = k[j+1:]
		}
		parts[i] = k + "=" + val
	}
	return strings.Join(parts, ",")
}

// uniqueLabels prefixes clashing labels with their sweep folder's name, then
// numbers any that still clash, so every plot's legend tells runs apart.
func uniqueLabels(runs []Run) {
	count := map[string]int{}
	for _, r := range runs {
		count[r.Label]++
	}
	for i := range runs {
		if count[runs[i].Label] > 1 && runs[i].Sweep != "" {
			runs[i].Label = filepath.Base(filepath.Clean(runs[i].Sweep)) + "/" + runs[i].Label
		}
	}
	seen := map[string]int{}
	for i := range runs {
		seen[runs[i].Label]++
		if n := seen[runs[i].Label]; n > 1 {
			runs[i].Label = fmt.Sprintf("%s (%d)", runs[i].Label, n)
		}
	}
}

// parseMetrics decodes metrics.jsonl: step records and events. A malformed
// last line is skipped with a warning (the writer flushes whole lines, so
// only a crash mid-write leaves one); any other malformed line is an error
// naming file and line.
func parseMetrics(b []byte, name string) ([]metrics.StepRecord, []metrics.Event, []string, error) {
	var steps []metrics.StepRecord
	var events []metrics.Event
	var warn []string
	err := eachLine(b, name, &warn, func(line []byte) error {
		var probe struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(line, &probe); err != nil {
			return err
		}
		switch probe.Type {
		case "", "step":
			var r metrics.StepRecord
			if err := json.Unmarshal(line, &r); err != nil {
				return err
			}
			steps = append(steps, r)
		case "event":
			var e metrics.Event
			if err := json.Unmarshal(line, &e); err != nil {
				return err
			}
			events = append(events, e)
		}
		return nil
	})
	return steps, events, warn, err
}

// parseTimeline decodes timeline.jsonl, one metrics.Span per line, with the
// same policy as parseMetrics. Spans that end before they start, or at
// times no run reaches (see plottable), are dropped.
func parseTimeline(b []byte, name string) ([]metrics.Span, []string, error) {
	var spans []metrics.Span
	var warn []string
	err := eachLine(b, name, &warn, func(line []byte) error {
		var s metrics.Span
		if err := json.Unmarshal(line, &s); err != nil {
			return err
		}
		if s.End >= s.Start && plottable(s.Start) && plottable(s.End) {
			spans = append(spans, s)
		}
		return nil
	})
	return spans, warn, err
}

// eachLine calls fn on every non-blank line of b, applying the
// truncated-last-line policy to its errors.
func eachLine(b []byte, name string, warn *[]string, fn func([]byte) error) error {
	lines := bytes.Split(b, []byte("\n"))
	last := len(lines) - 1
	for last >= 0 && len(bytes.TrimSpace(lines[last])) == 0 {
		last--
	}
	for i := 0; i <= last; i++ {
		line := bytes.TrimSpace(lines[i])
		if len(line) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			if i == last {
				*warn = append(*warn, fmt.Sprintf("%s:%d: skipped a malformed last line (run killed mid-write?): %v", name, i+1, err))
				return nil
			}
			return fmt.Errorf("%s:%d: %w (only a truncated last line is tolerated; fix or delete this line)", name, i+1, err)
		}
	}
	return nil
}

// deriveSummary computes what it can of a Summary from the step records,
// for a run that has not written summary.json.
func deriveSummary(cfg config.Config, steps []metrics.StepRecord) metrics.Summary {
	s := metrics.Summary{
		Name: cfg.Run.Name, Seed: uint64(cfg.Run.Seed), Steps: len(steps),
		Stages: cfg.Pipeline.Stages, Schedule: cfg.Pipeline.Schedule.String(), Transport: cfg.Pipeline.Transport,
		Compression: cfg.Compression.Method.String(), FinalValLoss: math.NaN(), FinalTrainLoss: math.NaN(),
	}
	if len(steps) == 0 {
		return s
	}
	lastRec := steps[len(steps)-1]
	s.FinalTrainLoss = lastRec.Loss
	s.Tokens = lastRec.Tokens
	s.WallSeconds = lastRec.WallSeconds
	for _, r := range steps {
		if r.ValLoss != nil {
			s.FinalValLoss = *r.ValLoss
		}
		if r.ValLossPerByte != nil {
			s.FinalValLossPerByte = *r.ValLossPerByte
		}
	}
	// As the trainer does, leave out the first step: it warms caches and
	// connections.
	measured := steps
	if len(steps) > 1 {
		measured = steps[1:]
		if dt := lastRec.WallSeconds - steps[0].WallSeconds; dt > 0 {
			s.TokensPerSecond = float64(lastRec.Tokens-steps[0].Tokens) / dt
		}
	} else if lastRec.WallSeconds > 0 {
		s.TokensPerSecond = float64(lastRec.Tokens) / lastRec.WallSeconds
	}
	var fwd, bwd, rawFwd, rawBwd, busy, idle, wait float64
	var tokens float64
	prev := steps[0].Tokens
	if len(steps) == 1 {
		prev = 0
	}
	for _, r := range measured {
		tokens += float64(r.Tokens - prev)
		prev = r.Tokens
		for _, l := range r.Links {
			fwd += float64(l.BytesForward)
			bwd += float64(l.BytesBackward)
			if l.Ratio > 0 {
				rawFwd += l.Ratio * float64(l.BytesForward)
				rawBwd += l.Ratio * float64(l.BytesBackward)
			}
		}
		for _, st := range r.Stages {
			busy += st.BusySeconds
			idle += st.IdleSeconds
			wait += st.NetWait
		}
	}
	if links := cfg.Pipeline.Stages - 1; links > 0 && tokens > 0 {
		s.WireBytesPerTokenForward = fwd / tokens / float64(links)
		s.WireBytesPerTokenBackward = bwd / tokens / float64(links)
	}
	if fwd > 0 && rawFwd > 0 {
		s.CompressionRatioForward = rawFwd / fwd
	}
	if bwd > 0 && rawBwd > 0 {
		s.CompressionRatioBackward = rawBwd / bwd
	}
	if all := busy + idle; all > 0 {
		s.BubbleFraction = idle / all
		s.NetworkWaitFraction = wait / all
	}
	return s
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// plottable reports whether x can go on an axis. gonum/plot's tick search
// never ends on ranges near the float64 limits, and no loss, byte count or
// time of a real run is beyond 1e15 or a nonzero value below 1e-12, so
// such values (hostile or corrupt records) are left out of the plots.
func plottable(x float64) bool {
	a := math.Abs(x)
	return finite(x) && a <= 1e15 && (a == 0 || a >= 1e-12)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
