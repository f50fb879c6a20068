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
