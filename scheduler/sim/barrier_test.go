package sim

import (
	"math"
	"testing"

	"github.com/narrowband/narrowband/scheduler"
)

// TestBarrier: synchronising at the optimizer step never makes a step
// faster, costs nothing when the stages are balanced and the links free,
// and costs exactly the two coordinator round trips' latency there.
func TestBarrier(t *testing.T) {
	for _, kind := range []scheduler.Schedule{scheduler.GPipe, scheduler.OneFOneB} {
		for _, S := range []int{1, 2, 4} {
			base := Config{Schedule: kind, Stages: S, Micro: 6, Steps: 3,
				Compute: []Compute{{Forward: 1, Backward: 2, Optimizer: 0.5}}, Links: []Link{Unlimited},
				Embedding: Embedding{BPS: math.Inf(1)}}
			free, err := Run(base)
			if err != nil {
				t.Fatal(err)
			}
			b := base
			b.Barrier = true
			bar, err := Run(b)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(bar.StepTime-free.StepTime) > 1e-9 {
				t.Errorf("%v S=%d: balanced free links: barrier step %v, without %v", kind, S, bar.StepTime, free.StepTime)
			}
			b.BarrierLatency = 0.25
			lat, err := Run(b)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(lat.StepTime-free.StepTime-0.5) > 1e-9 {
				t.Errorf("%v S=%d: barrier latency 0.25 gave step %v, want %v", kind, S, lat.StepTime, free.StepTime+0.5)
			}
			// Unbalanced stages on a slow link: the barrier can only cost.
			u := base
			u.Compute = []Compute{{Forward: 1, Backward: 2, Optimizer: 3}, {Forward: 2, Backward: 1, Optimizer: 0.1}}
			if S != 2 {
				continue
			}
			u.Links = []Link{{ForwardBPS: 8, BackwardBPS: 8, Latency: 0.3, ActivationBytes: 1, GradientBytes: 2}}
			u.Embedding = Embedding{Bytes: 1}
			a, err := Run(u)
			if err != nil {
				t.Fatal(err)
			}
			u.Barrier = true
			c, err := Run(u)
			if err != nil {
				t.Fatal(err)
			}
			if c.StepTime < a.StepTime-1e-9 {
				t.Errorf("%v: barrier made the step faster: %v < %v", kind, c.StepTime, a.StepTime)
			}
		}
	}
}
