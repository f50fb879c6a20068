package web

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/narrowband/narrowband/internal/metrics"
)

// TestAppendStepMatchesEncodingJSON: the hand encoder must produce what
// encoding/json produces for metrics.StepRecord, since the JSON names are
// the project's stable interface.
func TestAppendStepMatchesEncodingJSON(t *testing.T) {
	v := 2.25
	recs := []metrics.StepRecord{
		{Step: 1, Tokens: 2048, Loss: 5.5, LR: 3e-4, TokensPerSecond: 1234.5, WallSeconds: 0.25},
		{Step: 7, Tokens: 1 << 40, Loss: 1e-9, ValLoss: &v, GradNorm: 0.5, ReplicaBytes: 344780, ReplicaRawBytes: 1378304,
			Stages: []metrics.StageStats{{Stage: 0, BusySeconds: 1, IdleSeconds: 0.5, NetWait: 0.25, Peer: "peer-0", BytesSent: 16468, MicroBatches: 2},
				{Stage: 1}, {Stage: 0, Peer: "stage-0-replica-1 \"<é>\"", MicroBatches: 1}},
			Links: []metrics.LinkStats{{From: 0, To: 1, BytesForward: 1e6, BytesBackward: 9e5, Messages: 8, Ratio: 12.5, RTTMillis: 31, Candidate: "srflx \"é\" \x01"}, {From: 1, To: 2}}},
	}
	for _, r := range recs {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		if err := json.Unmarshal(appendStep(nil, &r, true), &a); err != nil {
			t.Fatalf("appendStep output is not JSON: %v", err)
		}
		if err := json.Unmarshal(want, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("appendStep:\n got %v\nwant %v", a, b)
		}
	}
	v0, v3 := 0, 3
	for _, sp := range []metrics.Span{
		{Stage: 2, Kind: "recv_wait", Step: 3, Micro: 1, Start: 0.5, End: 0.75},
		{Stage: 0, Kind: "forward", Step: 3, Micro: 2, Start: 0.5, End: 0.75, Of: 5, Version: &v3}, // async
		{Stage: 0, Kind: "stash", Step: 1, Micro: -1, Of: 1, Version: &v0},                         // version 0 is a version
	} {
		var a, b any
		want, _ := json.Marshal(sp)
		_ = json.Unmarshal(want, &b)
		if err := json.Unmarshal(appendSpan(nil, &sp), &a); err != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("appendSpan = %v (%v), want %v", a, err, b)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "host", "a\"b\\c", "\x00\x1f\x7f", "<script>&", "\u2028\u2029", "\xff\xfe", "é漢🙂"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendString(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendString(%q) = %s: not valid JSON: %v", s, out, err)
		}
		if utf8.ValidString(s) && got != s {
			t.Fatalf("appendString(%q) decodes to %q", s, got)
		}
	})
}

func FuzzAppendStep(f *testing.F) {
	f.Add(1, int64(2048), 5.5, 0.1, "host", true)
	f.Add(-1, int64(-1), math.NaN(), math.Inf(-1), "\xff\n", false)
	f.Add(0, int64(0), math.Inf(1), 1e308, "", true)
	f.Fuzz(func(t *testing.T, step int, tokens int64, loss, other float64, cand string, val bool) {
		r := metrics.StepRecord{Step: step, Tokens: tokens, Loss: loss, LR: other, WallSeconds: other, GradNorm: other,
			Stages: []metrics.StageStats{{BusySeconds: loss, NetWait: other}},
			Links:  []metrics.LinkStats{{Ratio: other, RTTMillis: loss, Candidate: cand}}}
		if val {
			r.ValLoss = &other
		}
		out := appendStep(nil, &r, true)
		if !json.Valid(out) {
			t.Fatalf("appendStep output is not valid JSON: %s", out)
		}
		f := frame("step", out)
		if n := countNewlines(f); n != 3 {
			t.Fatalf("frame has %d newlines, want exactly 3 (event line, one data line, blank line)", n)
		}
	})
}

func countNewlines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' || c == '\r' {
			n++
		}
	}
	return n
}
