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

// HasEmbeddingGrad reports whether the current step's tied-embedding
// gradient arrived (a routed machine does not wait for it itself).
func (m *StageMachine) HasEmbeddingGrad() bool { return m.emb[m.step&1] }
