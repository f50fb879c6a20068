package report

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/narrowband/narrowband/compression"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
)

// fakeRun describes a run folder to write: a config and the shape of its
// curves. The records go through internal/metrics, as the trainer's do.
type fakeRun struct {
	method, rank, precision string
	bandwidth               float64
	stages                  int
	steps                   int
	evalEvery               int
	tps                     float64 // tokens per second
	bytesFwd, bytesBwd      float64 // per token per link
	finalVal                float64
	timeline                bool
	noSummary               bool
}

const (
	fakeBatch = 8
	fakeT     = 64
	fakeEmbd  = 128
)

func (f fakeRun) config(name string) config.Config {
	c := config.Default()
	c.Run.Name = name
	c.Run.Steps = f.steps
	c.Model.NEmbd = fakeEmbd
	c.Model.BlockSize = fakeT
	c.Train.BatchSize = fakeBatch
	c.Train.EvalInterval = f.evalEvery
	c.Pipeline.Stages = f.stages
	c.Network.BandwidthMbps = f.bandwidth
	var err error
	if c.Compression.Method, err = compression.ParseMethod(f.method); err != nil {
		panic(err)
	}
	if f.rank != "" {
		if c.Compression.Rank, err = compression.ParseRank(f.rank); err != nil {
			panic(err)
		}
	}
	if f.precision != "" {
		if c.Compression.Precision, err = compression.ParsePrecision(f.precision); err != nil {
			panic(err)
		}
	}
	return c
}

// write creates the run folder dir and returns its summary.
func (f fakeRun) write(t testing.TB, dir, name string) *metrics.Summary {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := f.config(name)
	text, err := cfg.TOML()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), text, 0o644); err != nil {
		t.Fatal(err)
	}
	j, err := metrics.CreateJSONL(filepath.Join(dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(len(name)), 7))
	perStep := int64(fakeBatch * fakeT)
	loss := func(step int) float64 { // 5.5 nats/byte falling towards finalVal
		return f.finalVal + (5.55-f.finalVal)*math.Exp(-4*float64(step)/float64(f.steps))
	}
	var lastVal float64
	for s := 1; s <= f.steps; s++ {
		rec := metrics.StepRecord{
			Step: s, Tokens: int64(s) * perStep, Loss: loss(s) + 0.08*rng.NormFloat64(), LR: 1e-3,
			TokensPerSecond: f.tps, WallSeconds: float64(int64(s)*perStep) / f.tps,
		}
		if f.evalEvery > 0 && s%f.evalEvery == 0 || s == f.steps {
			v := loss(s) + 0.05
			if s == f.steps {
				v = f.finalVal
			}
			rec.ValLoss = &v
			lastVal = v
		}
		for st := 0; st < f.stages; st++ {
			rec.Stages = append(rec.Stages, metrics.StageStats{Stage: st, BusySeconds: 0.8, IdleSeconds: 0.2, NetWait: 0.05})
		}
		for l := 0; l+1 < f.stages; l++ {
			rec.Links = append(rec.Links, metrics.LinkStats{From: l, To: l + 1,
				BytesForward: int64(f.bytesFwd * float64(perStep)), BytesBackward: int64(f.bytesBwd * float64(perStep)),
				Messages: 4, Ratio: 4 * fakeEmbd / f.bytesFwd})
		}
		if err := j.Write(rec); err != nil {
			t.Fatal(err)
		}
		if s == f.steps/2 {
			if err := j.Write(metrics.Event{Type: "event", Kind: "rank_change", Step: s, WallSeconds: rec.WallSeconds}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	wall := float64(int64(f.steps)*perStep) / f.tps
	sum := &metrics.Summary{
		Name: name, Steps: f.steps, FinalValLoss: lastVal, Tokens: int64(f.steps) * perStep, WallSeconds: wall,
		TokensPerSecond: f.tps, Stages: f.stages, Compression: f.method,
		BubbleFraction: 0.2, NetworkWaitFraction: 0.05,
		WireBytesPerTokenForward: f.bytesFwd, WireBytesPerTokenBackward: f.bytesBwd,
	}
	if !f.noSummary {
		if err := metrics.WriteJSON(filepath.Join(dir, SummaryFile), sum); err != nil {
			t.Fatal(err)
		}
	}
	if f.timeline {
		writeFakeTimeline(t, filepath.Join(dir, TimelineFile), f.stages, f.steps, 4, wall)
	}
	return sum
}

// writeFakeTimeline writes a 1F1B-shaped timeline of the last 2 steps.
func writeFakeTimeline(t testing.TB, path string, stages, lastStep, micro int, end float64) {
	t.Helper()
	j, err := metrics.CreateJSONL(path)
	if err != nil {
		t.Fatal(err)
	}
	const fw, bw, opt = 0.05, 0.1, 0.03
	t0 := end - 2*(float64(micro+stages)*(fw+bw)+opt)
	for step := lastStep - 1; step <= lastStep; step++ {
		for s := 0; s < stages; s++ {
			x := t0 + float64(s)*fw
			if s > 0 {
				j.Write(metrics.Span{Stage: s, Kind: "recv_wait", Step: step, Micro: 0, Start: t0, End: x})
			}
			for m := 0; m < micro; m++ {
				j.Write(metrics.Span{Stage: s, Kind: "forward", Step: step, Micro: m, Start: x, End: x + fw})
				x += fw
			}
			wait := float64(stages-1-s) * 2 * fw
			if wait > 0 {
				j.Write(metrics.Span{Stage: s, Kind: "recv_wait", Step: step, Micro: micro - 1, Start: x, End: x + wait})
				x += wait
			}
			for m := micro - 1; m >= 0; m-- {
				j.Write(metrics.Span{Stage: s, Kind: "backward", Step: step, Micro: m, Start: x, End: x + bw})
				x += bw
			}
			j.Write(metrics.Span{Stage: s, Kind: "sync_wait", Step: step, Start: x, End: x + 0.02})
			j.Write(metrics.Span{Stage: s, Kind: "optimizer", Step: step, Start: x + 0.02, End: x + 0.02 + opt})
		}
		t0 += float64(micro+stages)*(fw+bw) + opt
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

// fakeSweep writes a sweep of codecs × bandwidths in the trainer's layout.
func fakeSweep(t testing.TB, dir string) map[string]fakeRun {
	t.Helper()
	codecs := []struct {
		method, rank, prec string
		fwd, bwd, val      float64
		speed              float64
	}{
		{"none", "", "", 512, 512, 2.30, 1},
		{"int8", "", "", 136, 136, 2.31, 2.5},
		{"lowrank", "32", "", 34, 34, 2.38, 4},
		{"subspace", "16", "fp16", 9, 9, 2.45, 5},
	}
	runs := map[string]fakeRun{}
	var entries []metrics.SweepResult
	for _, c := range codecs {
		for _, bw := range []float64{10, 60, 0} {
			v := "compression.method=" + c.method + ",network.bandwidth_mbps=" + ftoa(bw)
			tps := 300 * c.speed * (bw + 20) / (bw + 200)
			if bw == 0 {
				tps = 1500
			}
			f := fakeRun{method: c.method, rank: c.rank, precision: c.prec, bandwidth: bw, stages: 2, steps: 120,
				evalEvery: 20, tps: tps, bytesFwd: c.fwd, bytesBwd: c.bwd, finalVal: c.val, timeline: bw == 60 && c.method == "lowrank"}
			rd := filepath.Join(dir, v)
			sum := f.write(t, rd, "sweep/"+v)
			runs[shortVariant(v)] = f
			vals := map[string]string{"compression.method": `"` + c.method + `"`, "network.bandwidth_mbps": ftoa(bw)}
			entries = append(entries, metrics.SweepResult{Variant: v, Values: vals, Dir: rd, Summary: sum})
		}
	}
	if err := metrics.WriteJSON(filepath.Join(dir, SweepFile), entries); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.md"), []byte("# sweep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return runs
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
