package scheduler

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt golden transcripts")

// goldenShapes are the (S, M) transcripts kept in testdata.
var goldenShapes = [][2]int{{2, 4}, {4, 8}, {4, 2}}

// transcript is the readable per-stage order of one step.
func transcript(t *testing.T, p Pipeline) string {
	t.Helper()
	var b strings.Builder
	S := p.Stages
	la := ""
	if p.Lookahead > 0 {
		la = fmt.Sprintf(" lookahead %d", p.Lookahead)
	}
	fmt.Fprintf(&b, "# %v%s S=%d M=%d: what each stage runs in one optimizer step, in order.\n", p.Schedule, la, S, p.Micro)
	fmt.Fprintf(&b, "# Fj/Bj = forward/backward of micro-batch j, [k] = activation slot, -> = sent on completion.\n")
	for s := range S {
		m, err := NewStage(p, s)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "\nstage %d (max in flight %d)\n", s, m.MaxInFlight())
		var compact []string
		for _, a := range m.Order() {
			compact = append(compact, a.String())
			line := fmt.Sprintf("  %-4s [%d]", a, a.Slot)
			var sends []string
			for _, msg := range m.Sends(a) {
				sends = append(sends, msg.String())
			}
			if len(sends) > 0 {
				line += " -> " + strings.Join(sends, ", ")
			}
			b.WriteString(line + "\n")
		}
		if m.tied() {
			b.WriteString("  OPT  after the peer's embedding gradient\n")
		} else {
			b.WriteString("  OPT\n")
		}
		fmt.Fprintf(&b, "  order: %s OPT\n", strings.Join(compact, " "))
	}
	return b.String()
}

func TestGoldenOrder(t *testing.T) {
	for _, kind := range kinds {
		for _, sm := range goldenShapes {
			name := fmt.Sprintf("%v_s%d_m%d.txt", kind, sm[0], sm[1])
			t.Run(name, func(t *testing.T) {
				got := transcript(t, Pipeline{Schedule: kind, Stages: sm[0], Micro: sm[1]})
				checkGolden(t, filepath.Join("testdata", name), got)
			})
		}
	}
	name := "1f1b_s4_m8_lookahead2.txt"
	t.Run(name, func(t *testing.T) {
		got := transcript(t, Pipeline{Schedule: OneFOneB, Stages: 4, Micro: 8, Lookahead: 2})
		checkGolden(t, filepath.Join("testdata", name), got)
	})
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
		t.Errorf("%s differs from the transcript; if the change is intended, run go test ./scheduler/... -update and review the diff.\ngot:\n%s", path, got)
	}
}

// asyncGolden are the (S, M, D) async transcripts kept in testdata: two
// in-flight depths for S=2 and S=4.
var asyncGolden = [][3]int{{2, 4, 1}, {2, 4, 2}, {4, 4, 1}, {4, 4, 2}}

// asyncTranscript is the readable per-stage order of a whole run of steps
// steps: the async schedule has no per-step order, and the order does not
// depend on timing, so one zero-time run shows it.
func asyncTranscript(t *testing.T, p Pipeline, steps int) string {
	t.Helper()
	r := newAsyncRun(t, p, steps)
	r.run(nil)
	var b strings.Builder
	fmt.Fprintf(&b, "# async S=%d M=%d in_flight %d, %d steps: what each stage runs, in order (the same on every transport).\n",
		p.Stages, p.Micro, max(p.InFlight, 1), steps)
	fmt.Fprintf(&b, "# Fs.j/Bs.j = forward/backward of step s micro-batch j, @vN = weight version it runs with, [k] = activation slot,\n")
	fmt.Fprintf(&b, "# OPTs = optimizer step s (creates version s+1; delay = s minus its oldest forward's version),\n")
	fmt.Fprintf(&b, "# STASH vN = copy version N before it is overwritten, DROP vN = free the copy, -> = sent on completion.\n")
	for s, m := range r.m {
		fmt.Fprintf(&b, "\nstage %d: in flight ≤ %d, stashed versions ≤ %d, lag %d, gradient buffers %d, mean delay %.3g steps\n",
			s, m.MaxInFlight(), m.StashBound(), m.Lag(), m.GradBuffers(), m.Delay())
		var compact []string
		for _, a := range r.log[s] {
			var op string
			switch a.Kind {
			case ActionForward, ActionBackward:
				op = fmt.Sprintf("%c%d.%d@v%d [%d]", "FB"[a.Kind-ActionForward], a.Step, a.Micro, a.Version, a.Slot)
				compact = append(compact, fmt.Sprintf("%c%d.%d", "FB"[a.Kind-ActionForward], a.Step, a.Micro))
			case ActionOptimizerStep:
				op = fmt.Sprintf("OPT%d -> v%d (delay %d)", a.Step, a.Version, a.Delay)
				if m.tied() {
					op += " after the peer's embedding gradient"
				}
				compact = append(compact, fmt.Sprintf("OPT%d", a.Step))
			default:
				op = a.String()
				compact = append(compact, strings.ReplaceAll(a.String(), " ", ""))
			}
			var sends []string
			for _, msg := range m.Sends(a) {
				if msg.Kind == MessageEmbeddingGrad {
					sends = append(sends, fmt.Sprintf("emb %d %d->%d", msg.Step, msg.From, msg.To))
				} else {
					sends = append(sends, fmt.Sprintf("%s %d.%d %d->%d", msg.Kind, msg.Step, msg.Micro, msg.From, msg.To))
				}
			}
			if len(sends) > 0 {
				op += " -> " + strings.Join(sends, ", ")
			}
			b.WriteString("  " + op + "\n")
		}
		fmt.Fprintf(&b, "  order: %s\n", strings.Join(compact, " "))
	}
	return b.String()
}

func TestGoldenAsync(t *testing.T) {
	for _, sh := range asyncGolden {
		name := fmt.Sprintf("async_s%d_m%d_inflight%d.txt", sh[0], sh[1], sh[2])
		t.Run(name, func(t *testing.T) {
			got := asyncTranscript(t, Pipeline{Schedule: Async, Stages: sh[0], Micro: sh[1], InFlight: sh[2]}, 3)
			checkGolden(t, filepath.Join("testdata", name), got)
		})
	}
}
