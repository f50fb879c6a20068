package scheduler

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

var kinds = []Schedule{GPipe, OneFOneB}

// pipeline is a zero-time in-memory pipeline: every stage machine, and the
// messages in flight. deliver picks which pending message arrives next, so
// tests can reorder the network.
type pipeline struct {
	t       *testing.T
	m       []*StageMachine
	pending []Message
	log     [][]Action // per stage: compute actions in the order run
	slots   [][]int    // per stage: micro-batch in each slot, -1 free
	maxHeld []int
	steps   int
}

func newPipeline(t *testing.T, shape Pipeline, steps int) *pipeline {
	t.Helper()
	S := shape.Stages
	p := &pipeline{t: t, steps: steps, log: make([][]Action, S), slots: make([][]int, S), maxHeld: make([]int, S)}
	for s := range S {
		m, err := NewStage(shape, s)
		if err != nil {
			t.Fatal(err)
		}
		p.m = append(p.m, m)
		p.slots[s] = make([]int, m.MaxInFlight())
		for i := range p.slots[s] {
			p.slots[s][i] = -1
		}
	}
	return p
}

// run drives all stages to the end, delivering messages in an order chosen
// by rng (nil: FIFO). It fails the test on deadlock or a broken invariant.
func (p *pipeline) run(rng *rand.Rand) {
	t := p.t
	t.Helper()
	finished := make([]bool, len(p.m))
	for {
		progress := false
		for s, m := range p.m {
			for !finished[s] {
				a := m.Next()
				if a.Kind == ActionWait {
					break
				}
				progress = true
				if a.Kind == ActionDone {
					if a.Step+1 == p.steps {
						finished[s] = true
						break
					}
					if err := m.Advance(); err != nil {
						t.Fatal(err)
					}
					continue
				}
				p.check(s, a)
				if err := m.Step(Completed(a)); err != nil {
					t.Fatal(err)
				}
				p.pending = append(p.pending, m.Sends(a)...)
			}
		}
		if len(p.pending) > 0 {
			i := 0
			if rng != nil {
				i = rng.IntN(len(p.pending))
			}
			msg := p.pending[i]
			p.pending = append(p.pending[:i], p.pending[i+1:]...)
			if err := p.m[msg.To].Step(Arrived(msg)); err != nil {
				t.Fatalf("deliver %v: %v", msg, err)
			}
			continue
		}
		if !progress {
			break
		}
	}
	for s, f := range finished {
		if !f {
			t.Fatalf("deadlock: stage %d stuck at %v", s, p.m[s].Next())
		}
	}
}

// check enforces the slot and ordering invariants as the action runs.
func (p *pipeline) check(s int, a Action) {
	t := p.t
	t.Helper()
	m := p.m[s]
	switch a.Kind {
	case ActionForward:
		if p.slots[s][a.Slot] != -1 {
			t.Fatalf("stage %d: F%d into slot %d still holding micro-batch %d", s, a.Micro, a.Slot, p.slots[s][a.Slot])
		}
		p.slots[s][a.Slot] = a.Micro
		p.maxHeld[s] = max(p.maxHeld[s], m.InFlight()+1)
	case ActionBackward:
		if p.slots[s][a.Slot] != a.Micro {
			t.Fatalf("stage %d: B%d reads slot %d holding %d", s, a.Micro, a.Slot, p.slots[s][a.Slot])
		}
		p.slots[s][a.Slot] = -1
	case ActionOptimizerStep:
		if m.InFlight() != 0 {
			t.Fatalf("stage %d: optimizer with %d micro-batches in flight", s, m.InFlight())
		}
	}
	if a.Step == 0 {
		p.log[s] = append(p.log[s], a)
	}
}

// Invariants over many shapes and random message orders: no deadlock; per
// stage and step every micro-batch gets exactly one forward, then one
// backward; slots never collide; 1F1B holds at most min(S-stage, M)
// micro-batches (min(g·(S-stage-1)+1, M) with lookahead g), GPipe M — and
// both reach that bound.
func TestInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	shapes := []Pipeline{{Schedule: GPipe}, {Schedule: OneFOneB}, {Schedule: OneFOneB, Lookahead: 2}, {Schedule: OneFOneB, Lookahead: 5}}
	for _, shape := range shapes {
		for S := 1; S <= 9; S++ {
			for _, M := range []int{1, 2, 3, S, S + 1, 2 * S, 13} {
				shape.Stages, shape.Micro = S, M
				t.Run(fmt.Sprintf("%v/lookahead=%d/S=%d/M=%d", shape.Schedule, shape.Lookahead, S, M), func(t *testing.T) {
					for trial := range 3 {
						var r *rand.Rand
						if trial > 0 {
							r = rng
						}
						p := newPipeline(t, shape, 3)
						p.run(r)
						for s := range S {
							checkOrder(t, s, M, p.log[s])
							want := M
							if shape.Schedule == OneFOneB {
								want = min(max(shape.Lookahead, 1)*(S-s-1)+1, M)
							}
							if p.maxHeld[s] != want || p.m[s].MaxInFlight() != want {
								t.Fatalf("stage %d held %d micro-batches, MaxInFlight %d, want %d", s, p.maxHeld[s], p.m[s].MaxInFlight(), want)
							}
						}
					}
				})
			}
		}
	}
}

func TestPipelineValidate(t *testing.T) {
	for _, p := range []Pipeline{
		{Schedule: ScheduleUnknown, Stages: 2, Micro: 2},
		{Schedule: GPipe, Stages: 0, Micro: 2},
		{Schedule: GPipe, Stages: 2, Micro: 0},
		{Schedule: OneFOneB, Stages: 2, Micro: 2, Lookahead: -1},
		{Schedule: GPipe, Stages: 2, Micro: 2, Lookahead: 2},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: Validate = nil, want an error", p)
		}
		if _, err := NewStage(p, 0); err == nil {
			t.Errorf("%+v: NewStage = nil error", p)
		}
	}
	// A huge lookahead saturates at M instead of overflowing.
	p := Pipeline{Schedule: OneFOneB, Stages: 4, Micro: 8, Lookahead: math.MaxInt}
	if w, err := p.MaxInFlight(0); err != nil || w != 8 {
		t.Errorf("MaxInFlight with lookahead MaxInt = %d, %v, want 8", w, err)
	}
}

func TestLookaheadFor(t *testing.T) {
	for _, tc := range []struct {
		rtt, tf, tb float64
		want        int
	}{
		{0, 1, 2, 1}, {1, 1, 2, 2}, {3, 1, 2, 2}, {3.5, 1, 2, 3}, {10, 1, 2, 5},
		{math.NaN(), 1, 2, 1}, {math.Inf(1), 1, 2, 1}, {1, 0, 0, 1}, {-1, 1, 2, 1}, {1e300, 1e-300, 0, 1 << 20},
	} {
		if got := LookaheadFor(tc.rtt, tc.tf, tc.tb); got != tc.want {
			t.Errorf("LookaheadFor(%v, %v, %v) = %d, want %d", tc.rtt, tc.tf, tc.tb, got, tc.want)
		}
	}
}

func checkOrder(t *testing.T, s, M int, log []Action) {
	t.Helper()
	fwd := make([]int, M)
	bwd := make([]int, M)
	if len(log) != 2*M+1 || log[len(log)-1].Kind != ActionOptimizerStep {
		t.Fatalf("stage %d: step 0 ran %v, want %d forwards and backwards then the optimizer", s, log, 2*M)
	}
	for _, a := range log[:2*M] {
		switch a.Kind {
		case ActionForward:
			fwd[a.Micro]++
		case ActionBackward:
			if fwd[a.Micro] != 1 {
				t.Fatalf("stage %d: B%d before its forward: %v", s, a.Micro, log)
			}
			bwd[a.Micro]++
		}
	}
	for j := range M {
		if fwd[j] != 1 || bwd[j] != 1 {
			t.Fatalf("stage %d micro-batch %d: %d forwards, %d backwards: %v", s, j, fwd[j], bwd[j], log)
		}
	}
}

// The machine offers only actions whose input is there, and rejects events
// it cannot accept without changing state.
func TestMachineRejects(t *testing.T) {
	m, err := NewStageMachine(OneFOneB, 3, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	if a := m.Next(); a.Kind != ActionWait || a.WaitFor != MessageActivation || a.Micro != 0 {
		t.Fatalf("fresh middle stage: Next = %v, want wait(act 0)", a)
	}
	bad := []Event{
		Completed(Action{Kind: ActionForward, Micro: 0}), // not offered: input missing
		ActivationArrived(0, 4),                          // micro out of range
		ActivationArrived(0, -1),                         //
		ActivationArrived(2, 0),                          // two steps ahead
		ActivationArrived(-1, 0),                         // the past
		EmbeddingGradArrived(0),                          // middle stage has no tied embedding
		{Kind: EventUnknown},
		{Kind: EventKind(99)},
	}
	for _, ev := range bad {
		if err := m.Step(ev); !errors.Is(err, ErrBadEvent) {
			t.Errorf("Step(%+v) = %v, want ErrBadEvent", ev, err)
		}
	}
	if err := m.Advance(); !errors.Is(err, ErrNotDone) {
		t.Errorf("Advance mid-step = %v, want ErrNotDone", err)
	}
	if err := m.Step(ActivationArrived(0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := m.Step(ActivationArrived(0, 0)); !errors.Is(err, ErrBadEvent) {
		t.Errorf("duplicate arrival = %v, want ErrBadEvent", err)
	}
	a := m.Next()
	if a.Kind != ActionForward || a.Micro != 0 || a.Slot != 0 {
		t.Fatalf("Next = %+v, want F0 slot 0", a)
	}
	if got := m.Sends(a); len(got) != 1 || got[0] != (Message{Kind: MessageActivation, Step: 0, Micro: 0, From: 1, To: 2}) {
		t.Errorf("Sends(F0) = %v, want act 0 1->2", got)
	}
	// Completing something else, or from another step, is rejected.
	for _, wrong := range []Action{{Kind: ActionForward, Micro: 1}, {Kind: ActionBackward, Micro: 0}, {Kind: ActionForward, Micro: 0, Step: 1}} {
		if err := m.Step(Completed(wrong)); !errors.Is(err, ErrBadEvent) {
			t.Errorf("Completed(%+v) = %v, want ErrBadEvent", wrong, err)
		}
	}
	if err := m.Step(Completed(a)); err != nil {
		t.Fatal(err)
	}
	first, _ := NewStageMachine(GPipe, 3, 2, 0)
	if err := first.Step(ActivationArrived(0, 0)); !errors.Is(err, ErrBadEvent) {
		t.Errorf("activation to the first stage = %v, want ErrBadEvent", err)
	}
	last, _ := NewStageMachine(GPipe, 3, 2, 2)
	if err := last.Step(GradientArrived(0, 0)); !errors.Is(err, ErrBadEvent) {
		t.Errorf("gradient to the last stage = %v, want ErrBadEvent", err)
	}
}

// The first and last stage exchange the tied-embedding gradient after
// their last backward, and wait for the peer's before the optimizer.
func TestEmbeddingExchange(t *testing.T) {
	for _, kind := range kinds {
		for _, S := range []int{1, 2, 4} {
			for s := range S {
				m, _ := NewStageMachine(kind, S, 3, s)
				order := m.Order()
				var embSends int
				for i, a := range order {
					for _, msg := range m.Sends(a) {
						if msg.Kind != MessageEmbeddingGrad {
							continue
						}
						embSends++
						tied := S > 1 && (s == 0 || s == S-1)
						if !tied || i != len(order)-1 || msg.To != S-1-s {
							t.Errorf("%v S=%d stage %d: %v sends %v", kind, S, s, a, msg)
						}
					}
				}
				if want := map[bool]int{true: 1, false: 0}[S > 1 && (s == 0 || s == S-1)]; embSends != want {
					t.Errorf("%v S=%d stage %d: %d embedding sends, want %d", kind, S, s, embSends, want)
				}
			}
		}
	}
}

func TestParseSchedule(t *testing.T) {
	for in, want := range map[string]Schedule{"gpipe": GPipe, " GPipe ": GPipe, "1f1b": OneFOneB, "1F1B": OneFOneB, "pipedream-flush": OneFOneB} {
		got, err := ParseSchedule(in)
		if err != nil || got != want {
			t.Errorf("ParseSchedule(%q) = %v, %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "unknown", "1f1b-interleaved", "gpipe2"} {
		if _, err := ParseSchedule(in); !errors.Is(err, ErrUnknownSchedule) {
			t.Errorf("ParseSchedule(%q) = %v, want ErrUnknownSchedule", in, err)
		}
	}
	for _, k := range kinds {
		if got, err := ParseSchedule(k.String()); err != nil || got != k {
			t.Errorf("round trip %v: %v, %v", k, got, err)
		}
	}
	if ScheduleUnknown.Valid() {
		t.Error("the zero Schedule must not be valid")
	}
	if _, err := NewStageMachine(ScheduleUnknown, 2, 2, 0); !errors.Is(err, ErrUnknownSchedule) {
		t.Errorf("NewStageMachine(unknown) = %v, want ErrUnknownSchedule", err)
	}
	for _, sh := range [][3]int{{0, 1, 0}, {2, 0, 0}, {2, 2, 2}, {2, 2, -1}} {
		if _, err := NewStageMachine(GPipe, sh[0], sh[1], sh[2]); !errors.Is(err, ErrBadShape) {
			t.Errorf("NewStageMachine(S=%d, M=%d, stage=%d) = %v, want ErrBadShape", sh[0], sh[1], sh[2], err)
		}
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"gpipe", "1f1b", "PipeDream-Flush", "", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseSchedule(s)
		if (err == nil) != k.Valid() {
			t.Fatalf("ParseSchedule(%q) = %v, %v", s, k, err)
		}
	})
}

// FuzzStageMachine feeds hostile event streams (as a forged or corrupted
// peer would) into a machine: it must never panic, never offer an action
// whose input is missing, and keep its in-flight count within bounds.
func FuzzStageMachine(f *testing.F) {
	f.Add([]byte{0, 2, 4, 1, 1, 0, 0, 4, 0, 0, 4, 1, 0})
	f.Add([]byte{1, 3, 2, 1, 0, 0, 0, 1, 0, 1, 2, 0, 0, 3, 0, 0, 4, 0, 0, 4, 0, 0, 5, 0, 0})
	f.Add([]byte{0, 1, 1, 0, 4, 0, 0, 4, 0, 0, 4, 0, 0, 5, 0, 0, 4, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 4 {
			return
		}
		kind := kinds[b[0]%2]
		S, M := 1+int(b[1]%6), 1+int(b[2]%6)
		stage := int(b[3]) % S
		m, err := NewStageMachine(kind, S, M, stage)
		if err != nil {
			t.Fatal(err)
		}
		for b = b[4:]; len(b) >= 3; b = b[3:] {
			step, micro := int(int8(b[1])), int(int8(b[2]))
			var ev Event
			switch b[0] % 6 {
			case 0:
				ev = ActivationArrived(step, micro)
			case 1:
				ev = GradientArrived(step, micro)
			case 2:
				ev = EmbeddingGradArrived(step)
			case 3:
				ev = Completed(Action{Kind: ActionKind(b[1] % 7), Step: step, Micro: micro})
			case 4:
				ev = Completed(m.Next()) // the honest runtime path
			case 5:
				_ = m.Advance()
				continue
			}
			_ = m.Step(ev)
			if n := m.InFlight(); n < 0 || n > m.MaxInFlight() {
				t.Fatalf("in flight %d outside [0,%d]", n, m.MaxInFlight())
			}
			a := m.Next()
			if a.Kind == ActionForward || a.Kind == ActionBackward {
				if a.Slot != a.Micro%m.MaxInFlight() {
					t.Fatalf("%v slot %d", a, a.Slot)
				}
			}
		}
	})
}
