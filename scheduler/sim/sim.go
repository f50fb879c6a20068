package sim

import (
	"errors"
	"fmt"
	"math"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/scheduler"
)

// ErrDeadlock means the stage machines stopped with work left: a bug in the
// scheduler, never a property of the config.
var ErrDeadlock = errors.New("simulated pipeline deadlocked (scheduler bug)")

// Result is what a simulated run measured.
type Result struct {
	// StepTime is seconds per optimizer step in the steady state: the mean
	// time between the ends of the first and the last simulated step (the
	// whole first step when Steps == 1). A step ends when the last stage
	// to do so finishes its optimizer step. For Async with Steps ≥ 8 it is
	// measured between the ends of steps ⌊K/4⌋ and K-1-⌊K/4⌋ instead: the
	// stream fills, drains and (on the last stage) lags over several
	// steps at both ends, and counting those would flatter a deep pipe.
	StepTime float64
	// FirstStepTime includes filling the pipeline from empty.
	FirstStepTime float64
	// StepEnds[k] is when step k ended; the last one is the makespan.
	StepEnds []float64
	// TokensPerSecond is TokensPerStep / StepTime (0 without TokensPerStep).
	TokensPerSecond float64
	// Stages is per-stage use of time over the steady-state window.
	Stages []StageStats
	// Links is per-boundary traffic (index i joins stage i and i+1).
	Links []LinkStats
	// Spans is the timeline, if Config.Spans was set: per stage in time order.
	Spans []Span
}

// StageStats splits a stage's time over the steady-state window (the
// window StepTime is measured on). Busy + NetWait + Bubble = 1.
type StageStats struct {
	Stage int
	// Busy is the fraction of time computing.
	Busy float64
	// NetWait is the fraction of time waiting for a message that its sender
	// had already produced: queued behind other messages on the link, being
	// serialized, or in flight (latency); and summing gradients with the
	// stage's replicas (Config.ReplicaSum). Faster links shrink it.
	NetWait float64
	// Bubble is the fraction of time idle for other reasons: waiting for
	// another stage's compute (the pipeline bubble), or finished early.
	Bubble float64
	// BusySeconds and NetWaitSeconds are per step.
	BusySeconds, NetWaitSeconds float64
}

// Idle is the fraction of time not computing.
func (s StageStats) Idle() float64 { return s.NetWait + s.Bubble }

// Metrics converts s to the per-step record the web view and plots read,
// for a step of stepTime seconds.
func (s StageStats) Metrics(stepTime float64) metrics.StageStats {
	return metrics.StageStats{Stage: s.Stage, BusySeconds: s.BusySeconds,
		IdleSeconds: s.Idle() * stepTime, NetWait: s.NetWaitSeconds}
}

// LinkStats is one boundary's traffic per step and how busy its
// serializers were over the whole run. With two stages it includes the
// tied-embedding gradients (they share the connection); otherwise those
// travel on the separate first↔last connection, not reported here.
type LinkStats struct {
	From, To                          int
	ForwardBytes, BackwardBytes       int64   // per step
	ForwardBusy, BackwardBusy         float64 // fraction of the makespan spent serializing
	ForwardMessages, BackwardMessages int64   // per step
}

// event is a compute completion or a message arrival.
type event struct {
	t      float64
	seq    uint64
	stage  int
	arrive bool
	msg    scheduler.Message // arrival only
	sent   float64           // arrival only: when the sender finished producing it
}

// queue is a binary min-heap of events by (t, seq). Hand-written rather
// than container/heap so pushing an event does not allocate.
type queue []event

func (q queue) less(i, j int) bool {
	if q[i].t != q[j].t {
		return q[i].t < q[j].t
	}
	return q[i].seq < q[j].seq
}

func (q *queue) push(e event) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *queue) pop() event {
	h := *q
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	for i := 0; ; {
		l, small := 2*i+1, i
		if l < n && h.less(l, small) {
			small = l
		}
		if r := l + 1; r < n && h.less(r, small) {
			small = r
		}
		if small == i {
			break
		}
		h[i], h[small] = h[small], h[i]
		i = small
	}
	*q = h
	return top
}

// serializer is one direction of a link.
type serializer struct {
	bps, latency float64
	free         float64 // when the current queue drains
	bytes, msgs  int64
	busy         float64
}

func (s *serializer) send(t float64, n int64) float64 {
	start := math.Max(t, s.free)
	d := 0.0
	if !math.IsInf(s.bps, 1) {
		d = float64(n) * 8 / s.bps
	}
	s.free = start + d
	s.bytes += n
	s.msgs++
	s.busy += d
	return s.free + s.latency
}

type stageState struct {
	m        scheduler.Machine
	busy     bool
	cur      scheduler.Action
	start    float64
	waiting  bool
	wait     scheduler.Action
	waitFrom float64
	finished bool
	spans    []Span // compute and net-wait intervals, always kept for stats
	// With Config.Barrier: parked at the optimizer step or at the end of
	// the step until every stage is there; released lets the optimizer
	// run.
	atOpt, atDone, released bool
	// With Config.ReplicaSum: summing is the sum in progress, summed that
	// it is done and the optimizer step may start.
	summing, summed bool
	// With Config.Mine, on the two ends: this step's tied-embedding
	// gradient has been sent (after the sum).
	tiedSent bool
}

type run struct {
	c      Config
	q      queue
	seq    uint64
	st     []stageState
	fwd    []serializer // boundary i: stage i → i+1
	bwd    []serializer // boundary i: stage i+1 → i
	emb    [2]serializer
	ends   [][]float64 // [step][stage] optimizer end
	events int
}

// Run simulates c. It is deterministic: the same config gives the same
// result.
func Run(c Config) (Result, error) {
	if err := c.Validate(); err != nil {
		return Result{}, err
	}
	r := &run{c: c, st: make([]stageState, c.Stages), ends: make([][]float64, c.Steps)}
	for k := range r.ends {
		r.ends[k] = make([]float64, c.Stages)
	}
	for s := range r.st {
		m, err := scheduler.NewMachine(c.pipeline(), s, c.Steps)
		if err != nil {
			return Result{}, fmt.Errorf("sim: %w", err)
		}
		if c.Mine != nil {
			sm, ok := m.(*scheduler.StageMachine)
			if !ok {
				return Result{}, fmt.Errorf("sim: stage %d: %T cannot be restricted to a lane: %w", s, m, ErrBadConfig)
			}
			if err := sm.RestrictLane(c.Mine); err != nil {
				return Result{}, fmt.Errorf("sim: %w", err)
			}
		}
		r.st[s].m = m
	}
	if c.Stages > 1 {
		r.fwd = make([]serializer, c.Stages-1)
		r.bwd = make([]serializer, c.Stages-1)
		for i := range r.fwd {
			l := c.link(i)
			r.fwd[i] = serializer{bps: l.ForwardBPS, latency: l.Latency}
			r.bwd[i] = serializer{bps: l.BackwardBPS, latency: l.Latency}
		}
		e := c.Embedding
		r.emb[0] = serializer{bps: e.BPS, latency: e.Latency}
		r.emb[1] = serializer{bps: e.BPS, latency: e.Latency}
	}
	for s := range r.st {
		if err := r.kick(s, 0); err != nil {
			return Result{}, err
		}
	}
	for len(r.q) > 0 {
		ev := r.q.pop()
		r.events++
		if r.events > maxEvents {
			return Result{}, fmt.Errorf("sim: more than %d events: %w", maxEvents, ErrDeadlock)
		}
		var err error
		if ev.arrive {
			err = r.arrive(ev)
		} else {
			err = r.complete(ev)
		}
		if err != nil {
			return Result{}, err
		}
	}
	for s := range r.st {
		if !r.st[s].finished {
			return Result{}, fmt.Errorf("sim: stage %d stuck at %v: %w", s, r.st[s].m.Next(), ErrDeadlock)
		}
	}
	return r.result(), nil
}

func (r *run) push(e event) {
	e.seq = r.seq
	r.seq++
	r.q.push(e)
}

// kick asks stage s's machine for work at time now until it computes,
// waits or finishes.
func (r *run) kick(s int, now float64) error {
	st := &r.st[s]
	for {
		a := st.m.Next()
		switch a.Kind {
		case scheduler.ActionOptimizerStep:
			if d := r.c.replicaSum(s); d > 0 && !st.summed {
				// The runtime sums before it reports its norm, so the
				// sum comes before the barrier.
				st.busy, st.summing, st.cur, st.start = true, true, a, now
				r.push(event{t: now + d, stage: s})
				return nil
			}
			if r.c.Mine != nil && r.tied(s) {
				// A swarm's ends exchange the tied gradient after the
				// sum: send it once, then wait for the other end's.
				if !st.tiedSent {
					st.tiedSent = true
					m := scheduler.Message{Kind: scheduler.MessageEmbeddingGrad, Step: a.Step, Micro: -1, From: s, To: r.c.Stages - 1 - s}
					ser, n := r.route(m)
					r.push(event{t: ser.send(now, n), stage: m.To, arrive: true, msg: m, sent: now})
				}
				if !st.m.(*scheduler.StageMachine).HasEmbeddingGrad() {
					if !st.waiting {
						w := scheduler.Action{Kind: scheduler.ActionWait, Step: a.Step, Micro: -1, Slot: -1, WaitFor: scheduler.MessageEmbeddingGrad}
						st.waiting, st.wait, st.waitFrom = true, w, now
					}
					return nil
				}
			}
			if r.c.Barrier && !st.released {
				st.atOpt = true
				for j := range r.st {
					if !r.st[j].atOpt {
						return nil // parked until the last stage gets here
					}
				}
				t := now + r.c.BarrierLatency
				for j := range r.st {
					r.st[j].atOpt, r.st[j].released = false, true
				}
				for j := range r.st {
					if err := r.kick(j, t); err != nil {
						return err
					}
				}
				return nil
			}
			st.released, st.summed, st.tiedSent = false, false, false
			st.busy, st.cur, st.start = true, a, now
			r.push(event{t: now + r.c.compute(s).Optimizer, stage: s})
			return nil
		case scheduler.ActionForward, scheduler.ActionBackward:
			p := r.c.compute(s)
			d := p.Optimizer
			switch a.Kind {
			case scheduler.ActionForward:
				d = p.Forward
			case scheduler.ActionBackward:
				d = p.Backward
			}
			st.busy, st.cur, st.start = true, a, now
			r.push(event{t: now + d, stage: s})
			return nil
		case scheduler.ActionStash, scheduler.ActionDropVersion:
			// Async bookkeeping: a copy of the weights (memory bandwidth,
			// not modelled) or freeing one. Zero time, no span.
			if err := st.m.Step(scheduler.Completed(a)); err != nil {
				return fmt.Errorf("sim: %w", err)
			}
		case scheduler.ActionWait:
			if !st.waiting {
				st.waiting, st.wait, st.waitFrom = true, a, now
			}
			return nil
		case scheduler.ActionDone:
			if r.c.Barrier {
				st.atDone = true
				for j := range r.st {
					if !r.st[j].atDone {
						return nil
					}
				}
				t := now + r.c.BarrierLatency
				for j := range r.st {
					r.st[j].atDone = false
					if a.Step+1 >= r.c.Steps {
						r.st[j].finished = true
					} else if err := r.st[j].m.Advance(); err != nil {
						return fmt.Errorf("sim: %w", err)
					}
				}
				if a.Step+1 >= r.c.Steps {
					return nil
				}
				for j := range r.st {
					if err := r.kick(j, t); err != nil {
						return err
					}
				}
				return nil
			}
			if a.Step+1 >= r.c.Steps {
				st.finished = true
				return nil
			}
			if err := st.m.Advance(); err != nil {
				return fmt.Errorf("sim: %w", err)
			}
		default:
			return fmt.Errorf("sim: stage %d: unexpected action %v: %w", s, a, ErrDeadlock)
		}
	}
}

func (r *run) complete(ev event) error {
	s := ev.stage
	st := &r.st[s]
	a := st.cur
	if st.summing {
		st.busy, st.summing, st.summed = false, false, true
		st.spans = append(st.spans, Span{Stage: s, Kind: SpanReplicaSum, Step: a.Step, Micro: -1, Start: st.start, End: ev.t})
		return r.kick(s, ev.t)
	}
	if err := st.m.Step(scheduler.Completed(a)); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	st.busy = false
	st.spans = append(st.spans, Span{Stage: s, Kind: spanKind(a.Kind), Step: a.Step, Micro: a.Micro, Start: st.start, End: ev.t})
	if a.Kind == scheduler.ActionOptimizerStep {
		r.ends[a.Step][s] = ev.t
	}
	for _, m := range st.m.Sends(a) {
		ser, n := r.route(m)
		r.push(event{t: ser.send(ev.t, n), stage: m.To, arrive: true, msg: m, sent: ev.t})
	}
	return r.kick(s, ev.t)
}

// tied reports whether stage s is an end of the tied embedding.
func (r *run) tied(s int) bool { return r.c.Stages > 1 && (s == 0 || s == r.c.Stages-1) }

// route picks the serializer and the size of m.
func (r *run) route(m scheduler.Message) (*serializer, int64) {
	switch m.Kind {
	case scheduler.MessageActivation:
		return &r.fwd[m.From], r.c.link(m.From).ActivationBytes
	case scheduler.MessageGradient:
		return &r.bwd[m.To], r.c.link(m.To).GradientBytes
	}
	// Embedding gradient. With two stages it is the same connection.
	if r.c.Stages == 2 {
		if m.From == 0 {
			return &r.fwd[0], r.c.Embedding.Bytes
		}
		return &r.bwd[0], r.c.Embedding.Bytes
	}
	if m.From == 0 {
		return &r.emb[0], r.c.Embedding.Bytes
	}
	return &r.emb[1], r.c.Embedding.Bytes
}

func (r *run) arrive(ev event) error {
	st := &r.st[ev.stage]
	if err := st.m.Step(scheduler.Arrived(ev.msg)); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	w := st.wait
	if st.waiting && w.Step == ev.msg.Step && w.WaitFor == ev.msg.Kind && w.Micro == ev.msg.Micro {
		// The part of the wait after the sender produced the message is
		// the network's; before that the stage waited on compute.
		from := math.Max(st.waitFrom, ev.sent)
		if ev.t > from {
			st.spans = append(st.spans, Span{Stage: ev.stage, Kind: SpanNetWait, Step: w.Step, Micro: w.Micro, Start: from, End: ev.t})
		}
		st.waiting = false
	}
	if st.busy || st.finished {
		return nil
	}
	return r.kick(ev.stage, ev.t)
}

func (r *run) result() Result {
	c := r.c
	var res Result
	res.StepEnds = make([]float64, c.Steps)
	for k := range r.ends {
		for _, t := range r.ends[k] {
			res.StepEnds[k] = math.Max(res.StepEnds[k], t)
		}
	}
	res.FirstStepTime = res.StepEnds[0]
	lo, hi, steps := 0.0, res.StepEnds[0], 1.0
	if c.Steps > 1 {
		a, b := 0, c.Steps-1
		if c.Schedule == scheduler.Async && c.Steps >= 8 {
			a, b = c.Steps/4, c.Steps-1-c.Steps/4
		}
		lo, hi, steps = res.StepEnds[a], res.StepEnds[b], float64(b-a)
	}
	res.StepTime = (hi - lo) / steps
	if c.TokensPerStep > 0 && res.StepTime > 0 {
		res.TokensPerSecond = float64(c.TokensPerStep) / res.StepTime
	}
	window := hi - lo
	for s := range r.st {
		var busy, net float64
		for _, sp := range r.st[s].spans {
			d := math.Min(sp.End, hi) - math.Max(sp.Start, lo)
			if d <= 0 {
				continue
			}
			if sp.Kind == SpanNetWait || sp.Kind == SpanReplicaSum {
				net += d
			} else {
				busy += d
			}
		}
		ss := StageStats{Stage: s, BusySeconds: busy / steps, NetWaitSeconds: net / steps}
		if window > 0 {
			ss.Busy, ss.NetWait = busy/window, net/window
			ss.Bubble = math.Max(0, 1-ss.Busy-ss.NetWait)
		}
		res.Stages = append(res.Stages, ss)
		if c.Spans {
			res.Spans = append(res.Spans, r.st[s].spans...)
		}
	}
	makespan := res.StepEnds[c.Steps-1]
	k := int64(c.Steps)
	for i := range r.fwd {
		ls := LinkStats{From: i, To: i + 1,
			ForwardBytes: r.fwd[i].bytes / k, BackwardBytes: r.bwd[i].bytes / k,
			ForwardMessages: r.fwd[i].msgs / k, BackwardMessages: r.bwd[i].msgs / k}
		if makespan > 0 {
			ls.ForwardBusy, ls.BackwardBusy = r.fwd[i].busy/makespan, r.bwd[i].busy/makespan
		}
		res.Links = append(res.Links, ls)
	}
	return res
}
