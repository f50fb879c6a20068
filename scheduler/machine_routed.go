package scheduler

import "fmt"

// Routing a step of a swarm (stages held by several replicas, routed per
// micro-batch by Membership.Route): each replica of a stage runs only the
// micro-batches the route gives it, in the order the whole stage's
// schedule runs them. That order is the stage's Order filtered to the
// replica's micro-batches, not the schedule of a smaller pipeline: if
// every replica's order is a subsequence of its stage's order in one
// deadlock-free schedule, no set of replicas can wait on each other in a
// cycle (take the waiting action earliest in a valid run of the whole
// schedule: what it waits for comes earlier still, on a replica that
// therefore is not waiting), whatever the route, as long as sends do not
// block. Slots stay Micro mod MaxInFlight: a replica's in-flight
// micro-batches are a subset of the stage's, which never collide.
//
// A routed machine does not wait for the tied-embedding gradient before
// its optimizer step: in a swarm the two ends exchange it after each
// stage's replicas have summed their gradients (the runtime does it
// inside the optimizer step), since the ends may have different numbers
// of replicas.

// Restrict makes the machine run only the micro-batches mine marks in the
// current step (and, until the next Restrict, in later ones), and stop
// waiting for the tied-embedding gradient. It is only legal at the start
// of a step, before any compute of it.
func (m *StageMachine) Restrict(mine []bool) error {
	if len(mine) != m.micro {
		return fmt.Errorf("stage %d step %d: restrict to %d micro-batch flags, the step has %d: %w", m.stage, m.step, len(mine), m.micro, ErrBadEvent)
	}
	if m.pos != 0 {
		return fmt.Errorf("stage %d step %d: restrict after %d actions of the step: %w", m.stage, m.step, m.pos, ErrBadEvent)
	}
	if m.full == nil {
		m.full = m.order
	}
	m.order = m.order[:0:0]
	for _, a := range m.full {
		if mine[a.Micro] {
			m.order = append(m.order, a)
		}
	}
	m.routed = true
	return nil
}

// RestrictLane is Restrict for a route of lanes: every stage has the same
// number of replicas and micro-batch j runs on the same place in every
// stage's chain, so the replicas at one place are a pipeline of their
// own, and each runs the schedule of a pipeline of its share (a 1F1B warm-up
// of its own, not its stage's order filtered, which under 1F1B would
// leave a replica of R with about 1/R of the micro-batches in flight and
// wait a round trip between them). Its slots are its share's, which never
// exceed the stage's.
func (m *StageMachine) RestrictLane(mine []bool) error {
	if err := m.Restrict(mine); err != nil {
		return err
	}
	var ids []int
	for j, ok := range mine {
		if ok {
			ids = append(ids, j)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	p := m.spec
	p.Micro = len(ids)
	order, err := p.Order(m.stage)
	if err != nil {
		return fmt.Errorf("stage %d step %d: a lane of %d micro-batches: %w", m.stage, m.step, len(ids), err)
	}
	for i := range order {
		order[i].Micro = ids[order[i].Micro]
	}
	m.order = order
	return nil
}

// HasEmbeddingGrad reports whether the current step's tied-embedding
// gradient arrived (a routed machine does not wait for it itself).
func (m *StageMachine) HasEmbeddingGrad() bool { return m.emb[m.step&1] }
