package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/compression"

	"github.com/narrowband/narrowband/internal/config"
)

var metricsSeeds = []string{
	`{"step":1,"tokens":512,"loss":5.5,"lr":0.001,"tokens_per_second":100,"wall_seconds":5.1}` + "\n" +
		`{"type":"event","kind":"rank_change","step":1,"wall_seconds":5.2,"detail":{"rank":16}}` + "\n" +
		`{"step":2,"tokens":1024,"loss":5.1,"lr":0.001,"tokens_per_second":100,"wall_seconds":10.2,"val_loss":5.2,` +
		`"stages":[{"stage":0,"busy_seconds":1,"idle_seconds":0.5,"net_wait_seconds":0.1}],` +
		`"links":[{"from":0,"to":1,"bytes_forward":1000,"bytes_backward":900,"messages":2,"compression_ratio":4}]}` + "\n",
	`{"step":1,"tokens":512,"loss":5.5}` + "\n" + `{"step":2,"tok`,
	`{"step":"x"}` + "\n" + `{}` + "\n",
	"\n\n \n",
	`[1,2,3]`,
	`{"step":1,"tokens":-5,"loss":1e308,"wall_seconds":-1,"val_loss":-1e308}` + "\n" + `{"step":0,"tokens":0,"loss":0}`,
}

var timelineSeeds = []string{
	`{"stage":0,"kind":"forward","step":3,"micro":0,"start":1.0,"end":1.1}` + "\n" + `{"stage":1,"kind":"recv_wait","step":3,"micro":0,"start":1.0,"end":1.1}` + "\n",
	`{"stage":0,"kind":"backward","start":2,"end":1}`,
	`{"stage":99999999,"kind":"","start":0,"end":1e300}`,
	"garbage\n{}",
}

// FuzzParseMetrics: metrics.jsonl from disk never panics the decoder, and a
// success means every line but a possibly skipped last one was read.
func FuzzParseMetrics(f *testing.F) {
	for _, s := range metricsSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		steps, events, warn, err := parseMetrics(b, "metrics.jsonl")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "metrics.jsonl:") {
				t.Fatalf("error does not name the file and line: %v", err)
			}
			return
		}
		if len(warn) > 1 {
			t.Fatalf("more than one skipped line: %q", warn)
		}
		_ = steps
		_ = events
	})
}

func FuzzParseTimeline(f *testing.F) {
	for _, s := range timelineSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		spans, _, err := parseTimeline(b, "timeline.jsonl")
		if err != nil {
			return
		}
		for _, s := range spans {
			if !(s.End >= s.Start) {
				t.Fatalf("kept a span that ends before it starts: %+v", s)
			}
		}
	})
}

func FuzzParseSweep(f *testing.F) {
	f.Add([]byte(`[{"variant":"network.bandwidth_mbps=60","values":{"network.bandwidth_mbps":"60"},"dir":"/tmp/x","summary":{"final_val_loss":2.5}}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"variant":"../../etc","dir":"/"}]`))
	f.Add([]byte(`{"variant":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := parseSweep(b, "sweep.json")
		if err != nil {
			return
		}
		for _, e := range entries {
			// A hostile entry must not point the loader outside the
			// folders it names: only existing run folders are returned.
			if d := sweepRunDir(t.TempDir(), e); d != "" {
				if _, err := os.Stat(filepath.Join(d, MetricsFile)); err != nil {
					t.Fatalf("sweepRunDir returned %q without a metrics file", d)
				}
			}
		}
	})
}

// FuzzWrite: whatever parseable records a run folder holds, Write draws a
// report without panicking.
func FuzzWrite(f *testing.F) {
	for i, s := range metricsSeeds {
		f.Add([]byte(s), []byte(timelineSeeds[i%len(timelineSeeds)]), float64(i*30), 1+i%3)
	}
	f.Fuzz(writeFuzzBody)
}

func writeFuzzBody(t *testing.T, m, tl []byte, bw float64, stages int) {
	{
		steps, events, _, err := parseMetrics(m, "metrics.jsonl")
		if err != nil {
			return
		}
		spans, _, err := parseTimeline(tl, "timeline.jsonl")
		if err != nil {
			return
		}
		cfg := config.Default()
		cfg.Network.BandwidthMbps = bw
		cfg.Pipeline.Stages = stages
		a := Run{Label: "a", Config: cfg, Steps: steps, Events: events, Timeline: spans, Summary: deriveSummary(cfg, steps)}
		b := a
		b.Label = "b/../../x"
		b.Config.Compression.Method = compression.MethodInt8
		b.Config.Network.BandwidthMbps = 0
		files, err := Write(t.TempDir(), []Run{a, b})
		if len(files) == 0 {
			t.Fatalf("no report written: %v", err)
		}
	}
}
