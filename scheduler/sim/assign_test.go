package sim

import (
	"math"
	"testing"

	"github.com/narrowband/narrowband/scheduler"
)

// The balanced assignment pays off end to end: with a heavy LM head (GPT-2's
// 50257-token vocabulary at d=768 costs ~5.5 blocks), Assign's split gives a
// shorter simulated step than splitting the blocks evenly, and the step is
// set by its slowest stage.
func TestAssignShortensStep(t *testing.T) {
	const nLayer, S, M = 12, 4, 8
	costs := scheduler.GPTCosts(768, 50257)
	even, err := scheduler.Split(nLayer, []int{3, 3, 3, 3})
	if err != nil {
		t.Fatal(err)
	}
	balanced, err := scheduler.Assign(nLayer, S, costs)
	if err != nil {
		t.Fatal(err)
	}
	step := func(ranges []scheduler.Range) (float64, float64) {
		var comp []Compute
		slowest := 0.0
		for _, c := range scheduler.StageCosts(ranges, costs) {
			comp = append(comp, Compute{Forward: c, Backward: 2 * c})
			slowest = math.Max(slowest, c)
		}
		r, err := Run(Config{Schedule: scheduler.OneFOneB, Stages: S, Micro: M, Steps: 3, Compute: comp,
			Links: []Link{Unlimited}, Embedding: Embedding{BPS: math.Inf(1)}})
		if err != nil {
			t.Fatal(err)
		}
		return r.StepTime, slowest
	}
	tEven, _ := step(even)
	tBal, slowest := step(balanced)
	if tBal >= tEven {
		t.Fatalf("balanced split %v: step %v, even split: %v; want the balanced one faster", balanced, tBal, tEven)
	}
	if floor := M * 3 * slowest; tBal < floor-1e-9 {
		t.Fatalf("step %v below the slowest stage's compute %v", tBal, floor)
	}
	t.Logf("even %v: %.1f; Assign %v: %.1f block-units per step", even, tEven, balanced, tBal)
}
