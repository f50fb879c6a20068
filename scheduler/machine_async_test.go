package scheduler

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// asyncRun drives every stage of an async pipeline to the end with
// zero-time compute, delivering pending messages in an order chosen by rng
// (nil: FIFO), and checks the stashing contract as each action runs. It
// returns each stage's compute actions in the order they ran.
type asyncRun struct {
	t       *testing.T
	m       []*AsyncMachine
	pending []Message
	log     [][]Action

	// Per stage, what a runtime would hold.
	stash    []map[int]bool // stashed versions
	live     []int
	fwdVer   []map[int]int // stream index → version its forward ran with
	slots    [][]int       // micro-batch held by each activation slot, -1 free
	maxStash []int
	maxHeld  []int
	maxGrads []int
	grads    []map[int]bool // steps with some gradient accumulated, not applied
}

func newAsyncRun(t *testing.T, p Pipeline, steps int) *asyncRun {
	t.Helper()
	return newAsyncRunFrom(t, p, 0, steps)
}

func newAsyncRunFrom(t *testing.T, p Pipeline, first, steps int) *asyncRun {
	t.Helper()
	return newAsyncRunAt(t, p, first, first, steps)
}

// newAsyncRunAt is a run of a stream begun at origin, restarted at first
// (NewAsyncMachineAt), holding each stage's History as stashed copies.
func newAsyncRunAt(t *testing.T, p Pipeline, origin, first, steps int) *asyncRun {
	t.Helper()
	S := p.Stages
	r := &asyncRun{t: t, log: make([][]Action, S), live: make([]int, S),
		maxStash: make([]int, S), maxHeld: make([]int, S), maxGrads: make([]int, S)}
	for s := range S {
		m, err := NewAsyncMachineAt(p, s, origin, first, steps)
		if err != nil {
			t.Fatal(err)
		}
		r.m = append(r.m, m)
		r.live[s] = first
		hist := map[int]bool{}
		for _, v := range m.History() {
			hist[v] = true
		}
		r.stash = append(r.stash, hist)
		r.fwdVer = append(r.fwdVer, map[int]int{})
		r.grads = append(r.grads, map[int]bool{})
		r.slots = append(r.slots, slices.Repeat([]int{-1}, m.MaxInFlight()))
	}
	return r
}

func (r *asyncRun) run(rng *rand.Rand) {
	t := r.t
	t.Helper()
	done := make([]bool, len(r.m))
	for {
		progress := false
		for s, m := range r.m {
			for !done[s] {
				a := m.Next()
				if a.Kind == ActionWait {
					break
				}
				progress = true
				if a.Kind == ActionDone {
					done[s] = true
					break
				}
				r.check(s, a)
				if err := m.Step(Completed(a)); err != nil {
					t.Fatal(err)
				}
				r.log[s] = append(r.log[s], a)
				r.pending = append(r.pending, m.Sends(a)...)
			}
		}
		if len(r.pending) > 0 {
			i := 0
			if rng != nil {
				i = rng.IntN(len(r.pending))
			}
			msg := r.pending[i]
			r.pending = slices.Delete(r.pending, i, i+1)
			if err := r.m[msg.To].Step(Arrived(msg)); err != nil {
				t.Fatalf("deliver %v (step %d): %v", msg, msg.Step, err)
			}
			continue
		}
		if !progress {
			break
		}
	}
	for s, d := range done {
		if !d {
			t.Fatalf("deadlock: stage %d stuck at %v", s, r.m[s].Next())
		}
	}
}

// check is the runtime's side of the contract: a Backward finds the
// weights its Forward used (live or stashed), a version is stashed before
// the OptimizerStep that would overwrite it and dropped only when no
// in-flight micro-batch needs it, and the bounds hold.
func (r *asyncRun) check(s int, a Action) {
	t := r.t
	t.Helper()
	m := r.m[s]
	M := m.Micro()
	g := a.Step*M + a.Micro
	switch a.Kind {
	case ActionForward:
		if a.Version != r.live[s] && !(a.Version < m.First() && r.stash[s][a.Version]) {
			t.Fatalf("stage %d: F%d (step %d) with v%d, live is v%d and v%d is no history version held", s, a.Micro, a.Step, a.Version, r.live[s], a.Version)
		}
		if want := m.VersionOf(g); a.Version != want {
			t.Fatalf("stage %d: F of stream %d with v%d, VersionOf says v%d", s, g, a.Version, want)
		}
		if r.slots[s][a.Slot] != -1 {
			t.Fatalf("stage %d: F of stream %d into slot %d still holding %d", s, g, a.Slot, r.slots[s][a.Slot])
		}
		r.slots[s][a.Slot] = g
		r.fwdVer[s][g] = a.Version
		r.maxHeld[s] = max(r.maxHeld[s], m.InFlight()+1)
	case ActionBackward:
		v, ok := r.fwdVer[s][g]
		if !ok {
			t.Fatalf("stage %d: B of stream %d before its forward", s, g)
		}
		if a.Version != v {
			t.Fatalf("stage %d: B of stream %d with v%d, its forward used v%d", s, g, a.Version, v)
		}
		if v != r.live[s] && !r.stash[s][v] {
			t.Fatalf("stage %d: B of stream %d needs v%d, which is neither live (v%d) nor stashed", s, g, v, r.live[s])
		}
		if r.slots[s][a.Slot] != g {
			t.Fatalf("stage %d: B of stream %d reads slot %d holding %d", s, g, a.Slot, r.slots[s][a.Slot])
		}
		r.slots[s][a.Slot] = -1
		delete(r.fwdVer[s], g)
		r.grads[s][a.Step] = true
		r.maxGrads[s] = max(r.maxGrads[s], len(r.grads[s]))
	case ActionStash:
		if a.Version != r.live[s] || r.stash[s][a.Version] {
			t.Fatalf("stage %d: stash v%d (live v%d, stashed %v)", s, a.Version, r.live[s], r.stash[s])
		}
		r.stash[s][a.Version] = true
		r.maxStash[s] = max(r.maxStash[s], len(r.stash[s]))
		if bound := max(m.StashBound(), len(m.History())); len(r.stash[s]) > bound {
			t.Fatalf("stage %d: %d versions stashed, bound %d (StashBound %d, history %d)", s, len(r.stash[s]), bound, m.StashBound(), len(m.History()))
		}
	case ActionDropVersion:
		if !r.stash[s][a.Version] {
			t.Fatalf("stage %d: drop v%d, not stashed", s, a.Version)
		}
		for h, v := range r.fwdVer[s] {
			if v == a.Version {
				t.Fatalf("stage %d: drop v%d while stream %d (in flight) still needs it", s, a.Version, h)
			}
		}
		delete(r.stash[s], a.Version)
	case ActionOptimizerStep:
		if a.Step != r.live[s] || a.Version != a.Step+1 {
			t.Fatalf("stage %d: OPT step %d → v%d with live v%d", s, a.Step, a.Version, r.live[s])
		}
		minVer := a.Step
		for h := a.Step * M; h < (a.Step+1)*M; h++ {
			if _, inFlight := r.fwdVer[s][h]; inFlight {
				t.Fatalf("stage %d: OPT %d before the backward of stream %d", s, a.Step, h)
			}
		}
		for _, x := range r.log[s] {
			if x.Kind == ActionForward && x.Step == a.Step {
				minVer = min(minVer, x.Version)
			}
		}
		if a.Delay != a.Step-minVer {
			t.Fatalf("stage %d: OPT %d says delay %d, its forwards' oldest version is v%d", s, a.Step, a.Delay, minVer)
		}
		for v := range r.fwdVer[s] {
			if r.fwdVer[s][v] == r.live[s] && !r.stash[s][r.live[s]] {
				t.Fatalf("stage %d: OPT %d overwrites v%d, which stream %d still needs, without a stash", s, a.Step, r.live[s], v)
			}
		}
		delete(r.grads[s], a.Step)
		r.live[s]++
	}
}

// Over many shapes and random message orders: no deadlock; every stream
// micro-batch gets one forward then one backward with the same weight
// version; a version is stashed before it is overwritten while needed and
// dropped only after its last backward, and every stash is dropped by the
// end; stashed versions, in-flight micro-batches and gradient buffers stay
// within StashBound, MaxInFlight and GradBuffers, and reach them; the
// mean delay is Delay(); and each stage's order of actions is the same
// whatever the message order.
func TestAsyncInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 17))
	for S := 1; S <= 6; S++ {
		for _, M := range []int{1, 2, 3, 4, 8} {
			for _, D := range []int{0, 1, 2, 3} {
				p := Pipeline{Schedule: Async, Stages: S, Micro: M, InFlight: D}
				steps := 4 + (max(D, 1)*S+1)/M*2 // long enough to reach the steady state
				t.Run(fmt.Sprintf("S=%d/M=%d/D=%d", S, M, D), func(t *testing.T) {
					var ref [][]Action
					for trial := range 3 {
						var r *rand.Rand
						if trial > 0 {
							r = rng
						}
						run := newAsyncRun(t, p, steps)
						run.run(r)
						if trial == 0 {
							ref = run.log
						}
						for s, m := range run.m {
							if !slices.Equal(run.log[s], ref[s]) {
								t.Fatalf("stage %d: order depends on message timing:\n%v\n%v", s, run.log[s], ref[s])
							}
							checkAsyncLog(t, s, M, steps, run.log[s])
							if len(run.stash[s]) != 0 || m.Stashed() != 0 {
								t.Fatalf("stage %d: versions %v still stashed at the end", s, run.stash[s])
							}
							if run.maxStash[s] != m.StashBound() {
								t.Errorf("stage %d: stashed at most %d versions, StashBound %d", s, run.maxStash[s], m.StashBound())
							}
							if want := max(D, 1)*(S-s-1) + 1; run.maxHeld[s] != want || m.MaxInFlight() != want {
								t.Errorf("stage %d: held %d micro-batches, MaxInFlight %d, want %d", s, run.maxHeld[s], m.MaxInFlight(), want)
							}
							if run.maxGrads[s] != m.GradBuffers() {
								t.Errorf("stage %d: %d gradient buffers used, GradBuffers %d", s, run.maxGrads[s], m.GradBuffers())
							}
							checkDelay(t, m, run.log[s])
						}
					}
				})
			}
		}
	}
}

// checkAsyncLog: each micro-batch of each step exactly one forward then one
// backward; steps applied in order, once each, after their backwards.
func checkAsyncLog(t *testing.T, s, M, steps int, log []Action) {
	t.Helper()
	checkAsyncLogFrom(t, s, M, 0, steps, log)
}

func checkAsyncLogFrom(t *testing.T, s, M, first, steps int, log []Action) {
	t.Helper()
	fwd := make([]int, steps*M)
	bwd := make([]int, steps*M)
	applied := first
	for _, a := range log {
		g := a.Step*M + a.Micro
		switch a.Kind {
		case ActionForward:
			fwd[g]++
		case ActionBackward:
			if fwd[g] != 1 {
				t.Fatalf("stage %d: backward of stream %d before its forward", s, g)
			}
			bwd[g]++
		case ActionOptimizerStep:
			if a.Step != applied {
				t.Fatalf("stage %d: applied step %d, want %d next", s, a.Step, applied)
			}
			for h := a.Step * M; h < (a.Step+1)*M; h++ {
				if bwd[h] != 1 {
					t.Fatalf("stage %d: applied step %d before the backward of stream %d", s, a.Step, h)
				}
			}
			applied++
		}
	}
	if applied != steps {
		t.Fatalf("stage %d: %d steps applied, want %d", s, applied, steps)
	}
	for g := first * M; g < steps*M; g++ {
		if fwd[g] != 1 || bwd[g] != 1 {
			t.Fatalf("stage %d: stream %d had %d forwards, %d backwards", s, g, fwd[g], bwd[g])
		}
	}
}

// checkDelay: over steps whose forwards all came after the warm-up and
// whose OptimizerStep came before the drain, the mean of step − version
// over micro-batches is Delay() and the largest is the OPT's Delay.
func checkDelay(t *testing.T, m *AsyncMachine, log []Action) {
	t.Helper()
	M := m.Micro()
	lo := ceilDiv(m.MaxInFlight()-1+m.Lag(), M) + 1 // versions are clamped at 0 before this
	hi := m.Steps() - ceilDiv(m.Lag(), M) - 1       // the drain applies these late
	var sum, n int
	for _, a := range log {
		if a.Kind == ActionForward && a.Step >= lo && a.Step < hi {
			sum += a.Step - a.Version
			n++
		}
		if a.Kind == ActionOptimizerStep && a.Step >= lo && a.Step < hi {
			if want := ceilDiv(m.MaxInFlight()-1+m.Lag(), M); a.Delay != want {
				t.Errorf("stage %d: OPT %d delay %d, want ⌈(w+λ)/M⌉ = %d", m.Stage(), a.Step, a.Delay, want)
			}
		}
	}
	if n == 0 {
		return
	}
	if got := float64(sum) / float64(n); got != m.Delay() {
		t.Errorf("stage %d: mean delay %v over steps [%d,%d), Delay() %v", m.Stage(), got, lo, hi, m.Delay())
	}
}

// The bounds in closed form, as docs/async.md states them.
func TestAsyncBounds(t *testing.T) {
	for _, tc := range []struct {
		S, M, D, stage              int
		window, stash, lag, buffers int
		delay                       float64
	}{
		{4, 8, 1, 0, 4, 1, 0, 1, 3.0 / 8}, // PipeDream-2BW: two versions on the first stage
		{4, 8, 1, 3, 1, 0, 4, 2, 4.0 / 8},
		{4, 8, 2, 0, 7, 1, 0, 1, 6.0 / 8},
		{4, 4, 3, 0, 10, 3, 0, 1, 9.0 / 4},
		{4, 4, 3, 1, 7, 2, 0, 1, 6.0 / 4},
		{4, 4, 3, 3, 1, 0, 10, 4, 10.0 / 4},
		{2, 4, 1, 0, 2, 1, 0, 1, 1.0 / 4},
		{2, 4, 1, 1, 1, 0, 2, 2, 2.0 / 4},
		{1, 4, 1, 0, 1, 0, 0, 1, 0},
	} {
		m, err := NewAsyncMachine(Pipeline{Schedule: Async, Stages: tc.S, Micro: tc.M, InFlight: tc.D}, tc.stage, 10)
		if err != nil {
			t.Fatal(err)
		}
		if m.MaxInFlight() != tc.window || m.StashBound() != tc.stash || m.Lag() != tc.lag || m.GradBuffers() != tc.buffers || m.Delay() != tc.delay {
			t.Errorf("%+v: window %d stash %d lag %d buffers %d delay %v", tc, m.MaxInFlight(), m.StashBound(), m.Lag(), m.GradBuffers(), m.Delay())
		}
	}
}

func TestAsyncRejects(t *testing.T) {
	p := Pipeline{Schedule: Async, Stages: 3, Micro: 2, InFlight: 1}
	mid, err := NewAsyncMachine(p, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if a := mid.Next(); a.Kind != ActionWait || a.WaitFor != MessageActivation || a.Micro != 0 {
		t.Fatalf("fresh middle stage: Next = %v, want wait(act 0)", a)
	}
	for _, ev := range []Event{
		Completed(Action{Kind: ActionForward, Micro: 0}), // input missing
		ActivationArrived(0, 2),                          // micro out of range
		ActivationArrived(3, 0),                          // beyond the run
		ActivationArrived(-1, 0),
		ActivationArrived(1, 1), // stream 3: stage 0 holds at most 3 in flight, so 0..2
		GradientArrived(0, 0),   // not forwarded yet
		EmbeddingGradArrived(0), // middle stage
		{Kind: EventKind(99)},
	} {
		if err := mid.Step(ev); !errors.Is(err, ErrBadEvent) {
			t.Errorf("Step(%+v) = %v, want ErrBadEvent", ev, err)
		}
	}
	if err := mid.Step(ActivationArrived(0, 1)); err != nil {
		t.Fatal(err)
	}
	if err := mid.Step(ActivationArrived(0, 1)); !errors.Is(err, ErrBadEvent) {
		t.Errorf("duplicate activation = %v, want ErrBadEvent", err)
	}
	if err := mid.Step(ActivationArrived(0, 0)); err != nil {
		t.Fatal(err)
	}
	a := mid.Next()
	if a.Kind != ActionForward || a.Micro != 0 || a.Version != 0 {
		t.Fatalf("Next = %+v, want F0 v0", a)
	}
	if err := mid.Step(Completed(Action{Kind: ActionForward, Micro: 0, Version: 1})); !errors.Is(err, ErrBadEvent) {
		t.Errorf("completing F0 with the wrong version = %v, want ErrBadEvent", err)
	}
	if err := mid.Step(Completed(a)); err != nil {
		t.Fatal(err)
	}
	if err := mid.Step(ActivationArrived(0, 0)); !errors.Is(err, ErrBadEvent) {
		t.Errorf("activation of a forwarded micro-batch = %v, want ErrBadEvent", err)
	}
	if err := mid.Advance(); !errors.Is(err, ErrNotDone) {
		t.Errorf("Advance = %v, want ErrNotDone", err)
	}
	for _, bad := range []struct {
		p     Pipeline
		steps int
	}{
		{Pipeline{Schedule: OneFOneB, Stages: 2, Micro: 2}, 1},
		{Pipeline{Schedule: Async, Stages: 2, Micro: 2, InFlight: -1}, 1},
		{Pipeline{Schedule: Async, Stages: 2, Micro: 2}, 0},
		{Pipeline{Schedule: Async, Stages: 2, Micro: 2, Lookahead: 2}, 1},
	} {
		if _, err := NewAsyncMachine(bad.p, 0, bad.steps); !errors.Is(err, ErrBadShape) {
			t.Errorf("NewAsyncMachine(%+v, steps %d) = %v, want ErrBadShape", bad.p, bad.steps, err)
		}
	}
	if _, err := NewStage(Pipeline{Schedule: Async, Stages: 2, Micro: 2}, 0); !errors.Is(err, ErrNoStepOrder) {
		t.Errorf("NewStage(async) = %v, want ErrNoStepOrder", err)
	}
	if err := (Pipeline{Schedule: OneFOneB, Stages: 2, Micro: 2, InFlight: 2}).Validate(); !errors.Is(err, ErrBadShape) {
		t.Errorf("in_flight on 1f1b: %v, want ErrBadShape", err)
	}
}

// FuzzAsyncMachine feeds hostile event streams into an async machine: it
// must never panic and keep its counts within their bounds.
func FuzzAsyncMachine(f *testing.F) {
	f.Add([]byte{3, 2, 1, 1, 0, 0, 0, 4, 0, 0, 4, 0, 0, 1, 0, 0, 4, 0, 0})
	f.Add([]byte{1, 3, 0, 0, 4, 0, 0, 4, 0, 0, 4, 0, 0, 4, 0, 0, 2, 0, 0, 4, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 4 {
			return
		}
		S, M, D := 1+int(b[0]%5), 1+int(b[1]%5), int(b[2]%4)
		stage := int(b[3]) % S
		m, err := NewAsyncMachine(Pipeline{Schedule: Async, Stages: S, Micro: M, InFlight: D}, stage, 4)
		if err != nil {
			t.Fatal(err)
		}
		for b = b[4:]; len(b) >= 3; b = b[3:] {
			step, micro := int(int8(b[1])), int(int8(b[2]))
			var ev Event
			switch b[0] % 5 {
			case 0:
				ev = ActivationArrived(step, micro)
			case 1:
				ev = GradientArrived(step, micro)
			case 2:
				ev = EmbeddingGradArrived(step)
			case 3:
				ev = Completed(Action{Kind: ActionKind(b[1] % 9), Step: step, Micro: micro, Version: int(b[2] % 3)})
			case 4:
				ev = Completed(m.Next())
			}
			_ = m.Step(ev)
			if n := m.InFlight(); n < 0 || n > m.MaxInFlight() {
				t.Fatalf("in flight %d outside [0,%d]", n, m.MaxInFlight())
			}
			if n := m.Stashed(); n < 0 || n > m.StashBound() {
				t.Fatalf("stashed %d outside [0,%d]", n, m.StashBound())
			}
		}
	})
}

func TestInFlightFor(t *testing.T) {
	for _, tc := range []struct {
		rtt, tf, tb, opt float64
		want             int
	}{
		{0, 1, 2, 0, 1}, {0, 1, 2, 0.5, 2}, {3, 1, 2, 0, 2}, {3, 1, 2, 0.1, 3}, {10, 1, 2, 2, 5},
		{math.NaN(), 1, 2, 0, 1}, {math.Inf(1), 1, 2, 0, 1}, {1, 0, 0, 1, 1}, {-1, 1, 2, -1, 1},
	} {
		if got := InFlightFor(tc.rtt, tc.tf, tc.tb, tc.opt); got != tc.want {
			t.Errorf("InFlightFor(%v, %v, %v, %v) = %d, want %d", tc.rtt, tc.tf, tc.tb, tc.opt, got, tc.want)
		}
	}
}

// Runs shorter than the warm-up (the stream ends before the window fills,
// the lag runs past the last backward) still finish, with every safety
// check; the bounds need not be reached.
func TestAsyncShortRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, S := range []int{1, 2, 4, 7} {
		for _, M := range []int{1, 3} {
			for _, D := range []int{1, 4} {
				for _, steps := range []int{1, 2} {
					p := Pipeline{Schedule: Async, Stages: S, Micro: M, InFlight: D}
					for _, r := range []*rand.Rand{nil, rng} {
						run := newAsyncRun(t, p, steps)
						run.run(r)
						for s, m := range run.m {
							checkAsyncLog(t, s, M, steps, run.log[s])
							if m.Stashed() != 0 || len(run.stash[s]) != 0 {
								t.Fatalf("S=%d M=%d D=%d steps=%d stage %d: versions still stashed", S, M, D, steps, s)
							}
						}
					}
				}
			}
		}
	}
}

// A run restarted at step k (from a checkpoint, or after a failure, at the
// last step every stage applied) starts at version k with an empty pipe
// and keeps every invariant; its versions are k and up.
func TestAsyncRestart(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, S := range []int{1, 2, 4} {
		for _, M := range []int{1, 4} {
			for _, D := range []int{1, 3} {
				for _, first := range []int{1, 5} {
					p := Pipeline{Schedule: Async, Stages: S, Micro: M, InFlight: D}
					const steps = 12
					for _, r := range []*rand.Rand{nil, rng} {
						run := newAsyncRunFrom(t, p, first, steps)
						run.run(r)
						for s, m := range run.m {
							checkAsyncLogFrom(t, s, M, first, steps, run.log[s])
							if a := run.log[s][0]; a.Kind != ActionForward || a.Step != first || a.Version != first {
								t.Fatalf("S=%d stage %d restarted at %d begins with %v step %d v%d", S, s, first, a, a.Step, a.Version)
							}
							if m.Version() != steps || m.Stashed() != 0 {
								t.Fatalf("stage %d: ends at v%d with %d stashed", s, m.Version(), m.Stashed())
							}
						}
					}
				}
			}
		}
	}
	m, _ := NewAsyncMachineFrom(Pipeline{Schedule: Async, Stages: 2, Micro: 2}, 1, 3, 6)
	if err := m.Step(ActivationArrived(2, 0)); !errors.Is(err, ErrBadEvent) {
		t.Errorf("activation from before the restart = %v, want ErrBadEvent", err)
	}
	for _, first := range []int{-1, 6} {
		if _, err := NewAsyncMachineFrom(Pipeline{Schedule: Async, Stages: 2, Micro: 2}, 0, first, 6); !errors.Is(err, ErrBadShape) {
			t.Errorf("first %d: %v, want ErrBadShape", first, err)
		}
	}
}

// A stream restarted at step k as if it never stopped (NewAsyncMachineAt:
// what a rollback to a snapshot does) runs exactly the uninterrupted
// stream's Forwards, Backwards and OptimizerSteps from micro-batch k·M on,
// in the same order and on the same weight versions, on every stage: so a
// run rolled back after a failure computes what it would have without it.
// The history it needs is what HistoryAt(k) of the uninterrupted machine
// names, and it is dropped by the end.
func TestAsyncRestartAsIfUninterrupted(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, S := range []int{1, 2, 3, 4} {
		for _, M := range []int{1, 2, 4} {
			for _, D := range []int{1, 2, 3} {
				for _, origin := range []int{0, 2} {
					for _, first := range []int{origin, origin + 1, origin + 3, origin + 7} {
						p := Pipeline{Schedule: Async, Stages: S, Micro: M, InFlight: D}
						const steps = 14
						name := fmt.Sprintf("S=%d/M=%d/D=%d/origin=%d/first=%d", S, M, D, origin, first)
						whole := newAsyncRunFrom(t, p, origin, steps)
						whole.run(nil)
						again := newAsyncRunAt(t, p, origin, first, steps)
						again.run(rng)
						for s := range S {
							if got, want := again.m[s].History(), whole.m[s].HistoryAt(first); !slices.Equal(got, want) {
								t.Fatalf("%s stage %d: history %v, the uninterrupted machine says %v", name, s, got, want)
							}
							want := computeFrom(whole.log[s], M, first)
							got := computeFrom(again.log[s], M, first)
							if len(got) != len(want) {
								t.Fatalf("%s stage %d: %d compute actions from step %d, uninterrupted %d", name, s, len(got), first, len(want))
							}
							for i := range want {
								if got[i] != want[i] {
									t.Fatalf("%s stage %d: action %d is %v step %d micro %d v%d, uninterrupted %v step %d micro %d v%d",
										name, s, i, got[i].Kind, got[i].Step, got[i].Micro, got[i].Version, want[i].Kind, want[i].Step, want[i].Micro, want[i].Version)
								}
							}
							if again.m[s].Stashed() != 0 || len(again.stash[s]) != 0 {
								t.Fatalf("%s stage %d: ends with %d stashed (%v)", name, s, again.m[s].Stashed(), again.stash[s])
							}
						}
					}
				}
			}
		}
	}
	if _, err := NewAsyncMachineAt(Pipeline{Schedule: Async, Stages: 2, Micro: 2}, 0, 4, 3, 6); !errors.Is(err, ErrBadShape) {
		t.Errorf("origin after first: %v, want ErrBadShape", err)
	}
}

// computeFrom is the Forwards, Backwards and OptimizerSteps of log from
// step first on: what decides the numbers (stashing only decides memory).
func computeFrom(log []Action, M, first int) []Action {
	var out []Action
	for _, a := range log {
		switch a.Kind {
		case ActionForward, ActionBackward, ActionOptimizerStep:
			if a.Step >= first {
				out = append(out, a)
			}
		}
	}
	return out
}

// A message that arrives twice (the network copied it) is told apart from
// a forged or stale one: Duplicate says so while it waits and after its
// micro-batch used it; a message ahead of the window is no duplicate, and
// Step refuses both.
func TestAsyncDuplicate(t *testing.T) {
	p := Pipeline{Schedule: Async, Stages: 2, Micro: 2, InFlight: 1}
	m, err := NewAsyncMachine(p, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	act := ActivationArrived(0, 0)
	if m.Duplicate(act) {
		t.Fatal("a first activation is no duplicate")
	}
	if err := m.Step(act); err != nil {
		t.Fatal(err)
	}
	if !m.Duplicate(act) || !errors.Is(m.Step(act), ErrBadEvent) {
		t.Fatal("the same activation again: want Duplicate, and Step to refuse it")
	}
	a := m.Next()
	if a.Kind != ActionForward {
		t.Fatalf("next %v, want the forward", a)
	}
	if err := m.Step(Completed(a)); err != nil {
		t.Fatal(err)
	}
	if !m.Duplicate(act) {
		t.Error("an activation whose micro-batch was forwarded: want Duplicate")
	}
	if far := ActivationArrived(3, 1); m.Duplicate(far) || !errors.Is(m.Step(far), ErrBadEvent) {
		t.Error("an activation beyond the window: want no duplicate, refused")
	}
	if m.Duplicate(GradientArrived(0, 0)) {
		t.Error("the last stage receives no gradients: no duplicate either")
	}
	first, _ := NewAsyncMachine(p, 0, 4)
	emb := EmbeddingGradArrived(0)
	if first.Duplicate(emb) {
		t.Fatal("a first embedding gradient is no duplicate")
	}
	if err := first.Step(emb); err != nil {
		t.Fatal(err)
	}
	if !first.Duplicate(emb) {
		t.Error("the same embedding gradient again: want Duplicate")
	}
}
