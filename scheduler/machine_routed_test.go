package scheduler

import (
	"math/rand/v2"
	"testing"
)

// TestRoutedReplicasNeverDeadlock drives the replicas of every stage of a
// swarm, each restricted to the micro-batches of a random route, until the
// step is done: whatever the route, some replica can always act. It fails
// if Restrict ran a replica's micro-batches in an order of its own (a
// 1F1B of its share) instead of the stage's order filtered.
func TestRoutedReplicasNeverDeadlock(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, kind := range []Schedule{OneFOneB, GPipe} {
		for trial := 0; trial < 600; trial++ {
			S, M := 2+rng.IntN(4), 2+rng.IntN(9)
			reps := make([]int, S)
			route := make([][]int, S)
			// Every other trial routes by lanes (RestrictLane).
			lanes := trial%2 == 1
			R := 1 + rng.IntN(3)
			lane := make([]int, M)
			for j := range lane {
				lane[j] = rng.IntN(R)
			}
			for i := range reps {
				reps[i] = 1 + rng.IntN(3)
				route[i] = make([]int, M)
				for j := range route[i] {
					route[i][j] = rng.IntN(reps[i])
				}
				if lanes {
					reps[i], route[i] = R, lane
				}
			}
			p := Pipeline{Schedule: kind, Stages: S, Micro: M}
			ms := make([][]*StageMachine, S)
			for i := range ms {
				for r := 0; r < reps[i]; r++ {
					sm, err := NewStage(p, i)
					if err != nil {
						t.Fatal(err)
					}
					mine := make([]bool, M)
					for j := range mine {
						mine[j] = route[i][j] == r
					}
					restrict := sm.Restrict
					if lanes {
						restrict = sm.RestrictLane
					}
					if err := restrict(mine); err != nil {
						t.Fatal(err)
					}
					for _, a := range sm.Order() {
						if a.Slot >= sm.MaxInFlight() {
							t.Fatalf("micro-batch %d in slot %d of %d", a.Micro, a.Slot, sm.MaxInFlight())
						}
					}
					ms[i] = append(ms[i], sm)
				}
			}
			for {
				acted, done := false, true
				for i := range ms {
					for _, sm := range ms[i] {
						a := sm.Next()
						if a.Kind != ActionDone {
							done = false
						}
						if !a.Kind.Compute() && a.Kind != ActionOptimizerStep {
							continue
						}
						if err := sm.Step(Completed(a)); err != nil {
							t.Fatal(err)
						}
						acted = true
						switch {
						case a.Kind == ActionForward && i+1 < S:
							ms[i+1][route[i+1][a.Micro]].Step(ActivationArrived(0, a.Micro))
						case a.Kind == ActionBackward && i > 0:
							ms[i-1][route[i-1][a.Micro]].Step(GradientArrived(0, a.Micro))
						}
					}
				}
				if done {
					break
				}
				if !acted {
					t.Fatalf("%v S=%d M=%d replicas %v route %v (lanes %v): deadlock", kind, S, M, reps, route, lanes)
				}
			}
		}
	}
}

func TestRestrictOnlyAtStepStart(t *testing.T) {
	sm, err := NewStage(Pipeline{Schedule: OneFOneB, Stages: 2, Micro: 4}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := sm.Restrict([]bool{true}); err == nil {
		t.Fatal("restrict with the wrong number of flags accepted")
	}
	a := sm.Next()
	if err := sm.Step(Completed(a)); err != nil {
		t.Fatal(err)
	}
	if err := sm.Restrict([]bool{true, false, true, false}); err == nil {
		t.Fatal("restrict in the middle of a step accepted")
	}
}
