package sim

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/scheduler"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt golden timelines")

// goldenRun renders a simulated run as text: the timeline chart and the
// per-stage and per-link figures.
func goldenRun(t *testing.T, title string, c Config) string {
	t.Helper()
	c.Spans = true
	r, err := Run(c)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", title)
	fmt.Fprintf(&b, "# one column = 1 time unit; a..z forward of micro-batch 0..25, A..Z its backward,\n")
	fmt.Fprintf(&b, "# # optimizer step, ~ waiting on the network, . idle (bubble)\n\n")
	b.WriteString(Timeline(r.Spans, c.Stages, 1))
	fmt.Fprintf(&b, "\nstep ends %v; steady step time %.4g, first step %.4g\n", r.StepEnds, r.StepTime, r.FirstStepTime)
	for _, s := range r.Stages {
		fmt.Fprintf(&b, "stage %d: busy %.3f  net wait %.3f  bubble %.3f\n", s.Stage, s.Busy, s.NetWait, s.Bubble)
	}
	for _, l := range r.Links {
		fmt.Fprintf(&b, "link %d->%d: %d B fwd, %d B bwd per step; serializer busy %.3f fwd, %.3f bwd\n",
			l.From, l.To, l.ForwardBytes, l.BackwardBytes, l.ForwardBusy, l.BackwardBusy)
	}
	return b.String()
}

// Compute: forward 1 unit, backward 2, optimizer 1; two steps so the
// transcript shows the next step's forwards starting after each stage's
// optimizer.
func TestGoldenTimelines(t *testing.T) {
	for _, kind := range schedules {
		for _, sm := range [][2]int{{2, 4}, {4, 8}, {4, 2}} {
			S, M := sm[0], sm[1]
			name := fmt.Sprintf("%v_s%d_m%d.txt", kind, S, M)
			t.Run(name, func(t *testing.T) {
				c := Config{Schedule: kind, Stages: S, Micro: M, Steps: 2, Compute: []Compute{{1, 2, 1}},
					Links: []Link{Unlimited}, Embedding: Embedding{BPS: math.Inf(1)}}
				got := goldenRun(t, fmt.Sprintf("%v S=%d M=%d, tf=1 tb=2 opt=1, zero latency, unlimited bandwidth", kind, S, M), c)
				checkGolden(t, filepath.Join("testdata", name), got)
			})
		}
		// A slow boundary 1->2 (each activation takes 2 units to serialize)
		// and one unit of latency everywhere.
		name := fmt.Sprintf("%v_s4_m8_slowlink.txt", kind)
		t.Run(name, func(t *testing.T) {
			slow := Link{ForwardBPS: 8, BackwardBPS: 16, Latency: 1, ActivationBytes: 2, GradientBytes: 2}
			fast := Link{ForwardBPS: math.Inf(1), BackwardBPS: math.Inf(1), Latency: 1}
			c := Config{Schedule: kind, Stages: 4, Micro: 8, Steps: 2, Compute: []Compute{{1, 2, 1}},
				Links: []Link{fast, slow, fast}, Embedding: Embedding{BPS: math.Inf(1), Latency: 1}}
			got := goldenRun(t, fmt.Sprintf("%v S=4 M=8, tf=1 tb=2 opt=1, latency 1 everywhere, link 1->2: activation 2 units, gradient 1 unit", kind), c)
			checkGolden(t, filepath.Join("testdata", name), got)
		})
	}
}

// 1F1B with the lookahead that hides the slow link's round trip (2 units of
// latency + 3 of serialization against tf+tb = 3, LookaheadFor gives 3).
// Here it beats GPipe (43 against 50 units a step) because it overlaps
// activation and gradient traffic on the slow link, while holding
// min(3·(S-i-1)+1, 8) micro-batches: 8, 7, 4, 1.
func TestGoldenLookahead(t *testing.T) {
	slow := Link{ForwardBPS: 8, BackwardBPS: 16, Latency: 1, ActivationBytes: 2, GradientBytes: 2}
	fast := Link{ForwardBPS: math.Inf(1), BackwardBPS: math.Inf(1), Latency: 1}
	c := Config{Schedule: schedules[1], Stages: 4, Micro: 8, Steps: 2, Lookahead: 3, Compute: []Compute{{1, 2, 1}},
		Links: []Link{fast, slow, fast}, Embedding: Embedding{BPS: math.Inf(1), Latency: 1}}
	got := goldenRun(t, "1f1b lookahead 3, S=4 M=8, tf=1 tb=2 opt=1, latency 1 everywhere, link 1->2: activation 2 units, gradient 1 unit", c)
	checkGolden(t, filepath.Join("testdata", "1f1b_s4_m8_slowlink_lookahead3.txt"), got)
}

// The async schedule on the same shape as the 1F1B timelines, with one
// unit of latency on every link: in_flight 1 (each stage one micro-batch
// ahead of the next, PipeDream's async 1F1B) pays the round trip, the
// depth InFlightFor picks (1 + ⌈(2+1)/3⌉ = 2) hides it and the optimizer
// steps, and no stage idles in the steady state. Micro-batch letters
// repeat every step: step s's micro-batch j is letter j.
func TestGoldenAsyncTimelines(t *testing.T) {
	for _, d := range []int{1, 2} {
		name := fmt.Sprintf("async_s4_m4_latency1_inflight%d.txt", d)
		t.Run(name, func(t *testing.T) {
			l := Link{ForwardBPS: math.Inf(1), BackwardBPS: math.Inf(1), Latency: 1}
			c := Config{Schedule: schedules[0], Stages: 4, Micro: 4, Steps: 12, InFlight: d, Compute: []Compute{{1, 2, 1}},
				Links: []Link{l}, Embedding: Embedding{BPS: math.Inf(1), Latency: 1}}
			c.Schedule = scheduler.Async
			got := goldenRun(t, fmt.Sprintf("async in_flight %d, S=4 M=4, 12 steps, tf=1 tb=2 opt=1, latency 1 everywhere, unlimited bandwidth", d), c)
			checkGolden(t, filepath.Join("testdata", name), got)
		})
	}
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./scheduler/... -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs; if the change is intended, run go test ./scheduler/... -update and review the diff.\ngot:\n%s", path, got)
	}
}
