package pipeline

import (
	"fmt"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// An async restore carries the snapshot's weight versions as named
// tensors from the coordinator; a malformed one is refused with what is
// wrong, never taken half or crashed on, and a whole one is kept for the
// restart.
func TestAsyncRestoreChecksWeightVersions(t *testing.T) {
	c := tinyConfig(t)
	c.Pipeline.Stages, c.Pipeline.Schedule, c.Pipeline.InFlight = 2, scheduler.Async, 1
	c.Train.DelayCorrection = stages.DelayNesterov
	layout, err := engine.Layout(c)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorker(c, layout, 0, Links{})
	if err != nil {
		t.Fatal(err)
	}
	step, opt := w.opt.State()
	state := append(w.st.StateDict(), opt...)
	ps := w.st.Params()
	version := func(v int) []stages.Tensor {
		var out []stages.Tensor
		for _, p := range ps {
			out = append(out, stages.Tensor{Name: fmt.Sprintf("async.v%d.%s", v, p.Name), Shape: p.Shape, Data: make([]float32, len(p.Data))})
		}
		return out
	}
	live := func() []stages.Tensor {
		var out []stages.Tensor
		for _, p := range ps {
			out = append(out, stages.Tensor{Name: "async.live." + p.Name, Shape: p.Shape, Data: make([]float32, len(p.Data))})
		}
		return out
	}
	short := version(3)
	short[0].Data = short[0].Data[:1]
	short[0].Shape = []int{1}
	for _, tc := range []struct {
		name   string
		extra  []stages.Tensor
		origin int
		want   string // "" for accepted
	}{
		{"versions and look-ahead", append(version(3), append(version(4), live()...)...), 0, ""},
		{"another stage's tensors are not this stage's", []stages.Tensor{{Name: "async.v3.transformer.h.9.mlp.c_fc.weight", Shape: []int{1}, Data: []float32{0}}}, 0, ""},
		{"version not a number", []stages.Tensor{{Name: "async.vx." + ps[0].Name, Shape: ps[0].Shape, Data: make([]float32, len(ps[0].Data))}}, 0, "async.v<version>.<param>"},
		{"version before the origin", version(2), 5, "from the stream's origin up"},
		{"wrong size", short, 0, "values"},
		{"a param missing", version(3)[1:], 0, "lacks"},
		{"look-ahead incomplete", live()[1:], 0, "live weights lack"},
		{"unknown async tensor", []stages.Tensor{{Name: "async.magic", Shape: []int{1}, Data: []float32{1}}}, 0, "unknown tensor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob := encodeTensors(append(append([]stages.Tensor(nil), state...), tc.extra...))
			_, err := w.asyncRestore(ctrlMsg{Kind: ctrlRestore, OptimStep: step, Origin: tc.origin, blob: blob})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				r := w.asy.restart
				if r == nil || r.origin != tc.origin {
					t.Fatalf("restart %+v, want one from origin %d", r, tc.origin)
				}
				for v, h := range r.hist {
					if len(h) != len(ps) {
						t.Errorf("version %d: %d params, want %d", v, len(h), len(ps))
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}
