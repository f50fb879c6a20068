package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/plotter"
)

// keepOut lets a developer look at the plots: NARROWBAND_REPORT_OUT=dir
// writes them there instead of a temporary folder.
func keepOut(t *testing.T, name string) string {
	if d := os.Getenv("NARROWBAND_REPORT_OUT"); d != "" {
		return filepath.Join(d, name)
	}
	return t.TempDir()
}

func TestWriteSweep(t *testing.T) {
	dir := t.TempDir()
	want := fakeSweep(t, dir)
	out := keepOut(t, "sweep")
	files, err := Plot(out, dir)
	if err != nil {
		t.Fatalf("Plot: %v", err)
	}
	expect := []string{"loss_vs_tokens", "loss_vs_time", "tokens_per_second_vs_bandwidth", "wire_bytes_per_token", "pareto",
		"timeline_method=lowrank_bandwidth_mbps=60"}
	have := map[string]bool{}
	for _, f := range files {
		have[f] = true
	}
	for _, e := range expect {
		for _, ext := range []string{".png", ".svg"} {
			p := filepath.Join(out, e+ext)
			if !have[p] {
				t.Errorf("Write did not return %s; returned %v", p, files)
			}
			checkImage(t, p)
		}
	}
	md := readFile(t, filepath.Join(out, ReportFile))
	for _, e := range expect {
		if !strings.Contains(md, "]("+e+".png)") {
			t.Errorf("report.md does not link %s.png", e)
		}
	}
	// One row per run with its numbers; the gap is against the none run.
	for label, f := range want {
		row := findRow(t, md, label)
		cells := []string{
			fmt.Sprintf("%.4f", f.finalVal), fmt.Sprintf("%.0f", f.tps),
			fmt.Sprintf("%.1f", f.bytesFwd), fmt.Sprintf("%.1f× / %.1f×", 4*fakeEmbd/f.bytesFwd, 4*fakeEmbd/f.bytesBwd),
			fmt.Sprintf("%+.4f (%+.2f%%)", f.finalVal-2.30, 100*(f.finalVal-2.30)/2.30), "20.0%", "5.0%",
		}
		for _, c := range cells {
			if !strings.Contains(row, "| "+c+" |") {
				t.Errorf("row %q lacks cell %q", row, c)
			}
		}
	}
	if !strings.Contains(md, "# narrowband sweep: sweep") {
		t.Errorf("report.md title: want the sweep's name:\n%s", md[:min(len(md), 200)])
	}
}

func TestWriteSingleRunSkipsEmptyPlots(t *testing.T) {
	dir := t.TempDir()
	f := fakeRun{method: "none", stages: 1, steps: 10, tps: 1000, finalVal: 3.1}
	f.write(t, dir, "solo")
	out := keepOut(t, "solo")
	files, err := Plot(out, dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range files {
		names = append(names, filepath.Base(p))
	}
	got := strings.Join(names, " ")
	if got != "loss_vs_tokens.png loss_vs_tokens.svg loss_vs_time.png loss_vs_time.svg report.md" {
		t.Errorf("one single-stage run: want only the loss plots and the report, got %s", got)
	}
	md := readFile(t, filepath.Join(out, ReportFile))
	row := findRow(t, md, "solo")
	if !strings.Contains(row, "| 3.1000 | 1000 | — | — | — |") {
		t.Errorf("single-stage row should have no link figures: %q", row)
	}
	if strings.Contains(md, "gap vs none") {
		t.Error("gap column without another codec to compare")
	}
}

func TestDerivedSummaryAndTruncatedLine(t *testing.T) {
	dir := t.TempDir()
	f := fakeRun{method: "int8", stages: 3, steps: 21, evalEvery: 10, tps: 800, bytesFwd: 130, bytesBwd: 130, finalVal: 2.9, noSummary: true}
	f.write(t, dir, "killed")
	// A run killed mid-write leaves half a line.
	fh, err := os.OpenFile(filepath.Join(dir, MetricsFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteString(`{"step":22,"tokens":11264,"lo`)
	fh.Close()
	runs, err := Load(dir)
	if err != nil {
		t.Fatalf("a truncated last line must not fail Load: %v", err)
	}
	r := runs[0]
	if len(r.Steps) != 21 || len(r.Events) != 1 {
		t.Errorf("read %d steps, %d events; want 21, 1", len(r.Steps), len(r.Events))
	}
	if !r.Derived || len(r.Warnings) != 2 {
		t.Errorf("want a derived summary and 2 warnings, got derived=%v %q", r.Derived, r.Warnings)
	}
	s := r.Summary
	near := func(a, b float64) bool { return a > b*0.99 && a < b*1.01 }
	if s.FinalValLoss != 2.9 || !near(s.TokensPerSecond, 800) || !near(s.WireBytesPerTokenForward, 130) || !near(s.BubbleFraction, 0.2) || !near(s.NetworkWaitFraction, 0.05) {
		t.Errorf("derived summary %+v; want val 2.9, 800 tokens/s, 130 B/token, bubble 0.2, wait 0.05", s)
	}
	out := keepOut(t, "killed")
	if _, err := Write(out, runs); err != nil {
		t.Fatal(err)
	}
	md := readFile(t, filepath.Join(out, ReportFile))
	if !strings.Contains(md, "killed \\*") || !strings.Contains(md, "metrics.jsonl:23: skipped a malformed last line") {
		t.Errorf("report.md should flag the derived row and the skipped line:\n%s", md)
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	good := func(t *testing.T) string {
		d := t.TempDir()
		fakeRun{method: "none", stages: 2, steps: 5, tps: 100, bytesFwd: 512, bytesBwd: 512, finalVal: 3}.write(t, d, "r")
		return d
	}
	cases := []struct {
		name   string
		break_ func(t *testing.T, d string)
		want   string // in the error
	}{
		{"missing config", func(t *testing.T, d string) { os.Remove(filepath.Join(d, ConfigFile)) }, ConfigFile},
		{"bad config", func(t *testing.T, d string) { write(t, filepath.Join(d, ConfigFile), "[model]\nn_embd = \"x\"\n") }, ConfigFile},
		{"unknown config key", func(t *testing.T, d string) { write(t, filepath.Join(d, ConfigFile), "[model]\nwidth = 3\n") }, ConfigFile + ":2"},
		{"corrupt metrics line", func(t *testing.T, d string) {
			b := readFile(t, filepath.Join(d, MetricsFile))
			lines := strings.SplitAfter(b, "\n")
			lines[1] = "{\"step\": oops}\n"
			write(t, filepath.Join(d, MetricsFile), strings.Join(lines, ""))
		}, MetricsFile + ":2"},
		{"wrong type in metrics", func(t *testing.T, d string) {
			write(t, filepath.Join(d, MetricsFile), "{\"step\":\"one\"}\n{\"step\":2}\n")
		}, MetricsFile + ":1"},
		{"bad summary", func(t *testing.T, d string) { write(t, filepath.Join(d, SummaryFile), "{\"tokens\": [") }, SummaryFile},
		{"bad timeline", func(t *testing.T, d string) {
			write(t, filepath.Join(d, TimelineFile), "not json\n{\"stage\":0}\n")
		}, TimelineFile + ":1"},
		{"not a run", func(t *testing.T, d string) { os.Remove(filepath.Join(d, MetricsFile)) }, "not a run or sweep folder"},
		{"bad sweep", func(t *testing.T, d string) { write(t, filepath.Join(d, SweepFile), "{}") }, SweepFile},
		{"sweep without its runs", func(t *testing.T, d string) {
			write(t, filepath.Join(d, SweepFile), `[{"variant":"a=1","dir":"/nowhere/a=1"}]`)
		}, "no run folder"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := good(t)
			c.break_(t, d)
			_, err := Load(d)
			if err == nil {
				t.Fatalf("Load succeeded on a %s", c.name)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %q", err, c.want)
			}
		})
	}
	if _, err := Load(); err == nil {
		t.Error("Load() with no folders should fail")
	}
	if _, err := Write(t.TempDir(), nil); err == nil {
		t.Error("Write with no runs should fail")
	}
}

// A sweep folder moved elsewhere still loads: its runs are found next to
// sweep.json, not at the absolute paths recorded.
func TestMovedSweep(t *testing.T) {
	old := filepath.Join(t.TempDir(), "sw")
	fakeSweep(t, old)
	moved := filepath.Join(t.TempDir(), "moved")
	if err := os.Rename(old, moved); err != nil {
		t.Fatal(err)
	}
	runs, err := Load(moved)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 12 || !strings.HasPrefix(runs[0].Dir, moved) {
		t.Errorf("loaded %d runs from %s; want 12 under %s", len(runs), runs[0].Dir, moved)
	}
}

// Two sweeps with the same variants keep distinct labels, and a codec keeps
// its colour in every plot.
func TestLabelsAndColours(t *testing.T) {
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	fakeSweep(t, a)
	fakeSweep(t, b)
	runs, err := Load(a, b)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range runs {
		if seen[r.Label] {
			t.Errorf("label %q used twice", r.Label)
		}
		seen[r.Label] = true
	}
	if runs[0].Label != "a/method=none,bandwidth_mbps=10" {
		t.Errorf("first label %q; want it prefixed by its sweep", runs[0].Label)
	}
	st := newStyles(runs)
	if !st.byCodec {
		t.Fatal("several codecs: colour should mean codec")
	}
	for _, r := range runs {
		if st.run[r.Label].Colour != st.codec[r.Codec()] {
			t.Errorf("%s: run colour differs from its codec's", r.Label)
		}
	}
	if st.codec["none"] == st.codec["int8"] {
		t.Error("two codecs share a colour")
	}
}

func TestCodec(t *testing.T) {
	for _, c := range []struct {
		f    fakeRun
		want string
	}{
		{fakeRun{method: "none"}, "none"},
		{fakeRun{method: "lowrank", rank: "32"}, "lowrank r=32"},
		{fakeRun{method: "subspace", rank: "auto", precision: "fp16"}, "subspace r=auto fp16"},
		{fakeRun{method: "topk"}, "topk 10% +ef +lz4"},
	} {
		r := Run{Config: c.f.config("x")}
		if c.f.method == "topk" {
			r.Config.Compression.ErrorFeedback = true
			r.Config.Compression.LZ4 = true
		}
		if got := r.Codec(); got != c.want {
			t.Errorf("Codec() = %q, want %q", got, c.want)
		}
	}
}

// Hostile but parseable values (huge, negative, zero-length spans) still
// give a report, not a crash.
func TestDegenerateValues(t *testing.T) {
	dir := t.TempDir()
	f := fakeRun{method: "int8", stages: 2, steps: 3, tps: 1e300, bytesFwd: 1e-12, bytesBwd: 1e-300, finalVal: -5}
	f.write(t, dir, "odd")
	write(t, filepath.Join(dir, TimelineFile), `{"stage":-3,"kind":"??","start":5,"end":5}`+"\n"+`{"stage":1e9,"kind":"forward","start":1,"end":0}`+"\n")
	write(t, filepath.Join(dir, SummaryFile), `{"final_val_loss":-1e308,"tokens_per_second":-4,"wire_bytes_per_token_forward":-1}`)
	files, err := Plot(t.TempDir(), dir)
	if err != nil && len(files) == 0 {
		t.Fatalf("no report at all: %v", err)
	}
	for _, p := range files {
		if strings.HasSuffix(p, ".png") || strings.HasSuffix(p, ".svg") {
			checkImage(t, p)
		}
	}
}

func checkImage(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return
	}
	switch filepath.Ext(path) {
	case ".png":
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return
		}
		if s := img.Bounds().Size(); s.X < 400 || s.Y < 200 || s.X > 4000 || s.Y > 4000 {
			t.Errorf("%s: %v pixels, want a readable size", path, s)
		}
	case ".svg":
		d := xml.NewDecoder(bytes.NewReader(b))
		root := ""
		for {
			tok, err := d.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("%s: not XML: %v", path, err)
				return
			}
			if se, ok := tok.(xml.StartElement); ok && root == "" {
				root = se.Name.Local
			}
		}
		if root != "svg" {
			t.Errorf("%s: root element %q, want svg", path, root)
		}
	}
}

func findRow(t *testing.T, md, label string) string {
	t.Helper()
	for _, l := range strings.Split(md, "\n") {
		if strings.HasPrefix(l, "| "+label+" |") {
			return l
		}
	}
	t.Errorf("report.md has no row for %q", label)
	return ""
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFmtGap(t *testing.T) {
	for _, c := range []struct {
		g    float64
		want string
	}{{-1e-9, "+0.0000"}, {0, "+0.0000"}, {0.01, "+0.0100"}, {-0.25, "-0.2500"}} {
		if got := fmtGap(c.g); got != c.want {
			t.Errorf("fmtGap(%g) = %q, want %q", c.g, got, c.want)
		}
	}
}

func TestThinning(t *testing.T) {
	var xys plotter.XYs
	for i := 0; i < 10007; i++ {
		xys = append(xys, plotter.XY{X: float64(i), Y: float64(i % 97)})
	}
	xys[5000].Y = 1000 // a spike must survive thinning
	e := envelope(xys, 500)
	if len(e) > 1000 {
		t.Errorf("envelope kept %d points, want at most 1000", len(e))
	}
	spike, lo := false, false
	for i, p := range e {
		spike = spike || p.Y == 1000
		lo = lo || p.Y == 0
		if i > 0 && p.X <= e[i-1].X {
			t.Fatalf("envelope out of x order at %d", i)
		}
	}
	if !spike || !lo {
		t.Errorf("envelope lost the extremes (spike %v, zero %v)", spike, lo)
	}
	s := stride(xys, 2000)
	if len(s) > 2001 || s[len(s)-1] != xys[len(xys)-1] || s[0] != xys[0] {
		t.Errorf("stride: %d points, ends %v..%v", len(s), s[0], s[len(s)-1])
	}
}
