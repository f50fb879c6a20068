package pipeline

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/scheduler"
)

// asyncDrive is the driver's side of the async schedule: its stages run
// several steps apart, so the driver sends each step's command (batch,
// learning rate, whether to hold a copy) ahead, and a step is done when
// every stage has reported applying it. The order of every update is the
// machines', so nothing here can change a loss.
type asyncDrive struct {
	origin int               // the step the stream began at: 0, or the step a resumed run restored
	sent   int               // the next step to send; -1: none yet (or restored)
	next   int               // the next step to wait for
	ahead  int               // steps sent beyond the one awaited
	done   map[int][]ctrlMsg // step → each stage's ctrlDone (Kind 0: not yet)
}

func newAsyncDrive(spec scheduler.Pipeline) *asyncDrive {
	// Stage 0 forwards w_0 micro-batches past the step it applies, and
	// the last stage backwards λ = w_0+1 past it: both need the batches of
	// the steps those reach before the step can be done everywhere.
	w0 := max(spec.InFlight, 1) * (spec.Stages - 1)
	ahead := (2*w0+1+spec.Micro-1)/spec.Micro + 2
	return &asyncDrive{sent: -1, ahead: ahead, done: map[int][]ctrlMsg{}}
}

// restart forgets the stream sent so far: it begins again at the next
// step asked for (after a restore or a rollback).
func (a *asyncDrive) restart() {
	a.sent, a.done = -1, map[int][]ctrlMsg{}
}

// file keeps stage i's report of a step.
func (a *asyncDrive) file(S, i int, m ctrlMsg) error {
	d := a.done[m.Step]
	if d == nil {
		d = make([]ctrlMsg, S)
		a.done[m.Step] = d
	}
	if d[i].Kind != ctrlUnknown {
		return fmt.Errorf("stage %d reported step %d twice", i, m.Step+1)
	}
	d[i] = m
	return nil
}

func (a *asyncDrive) complete(step int) bool {
	d := a.done[step]
	if d == nil {
		return false
	}
	for _, m := range d {
		if m.Kind == ctrlUnknown {
			return false
		}
	}
	return true
}

// asyncStep sends the commands up to step+ahead and waits until every
// stage has applied step.
func (p *Driver) asyncStep(ctx context.Context, step int, lr float64) (engine.StepResult, error) {
	a := p.async
	S := len(p.ctrl)
	if want := engine.StepLR(p.cfg, step); math.Abs(lr-want) > 1e-9*math.Abs(want) {
		return engine.StepResult{}, fmt.Errorf("async step %d: learning rate %g, but the schedule the driver sends ahead gives %g", step+1, lr, want)
	}
	if a.sent < 0 {
		a.sent, a.next = step, step
	}
	if step != a.next {
		return engine.StepResult{}, fmt.Errorf("async: step %d asked for, want step %d (the stream runs steps in order)", step+1, a.next+1)
	}
	for a.sent <= min(step+a.ahead, p.cfg.Run.Steps-1) {
		k := a.sent
		blob := p.batchBlob(k)
		for i := 0; i < S; i++ {
			m := ctrlMsg{Kind: ctrlStep, Step: k, LR: engine.StepLR(p.cfg, k), T0: p.t0.UnixNano(), Hold: engine.KeepsState(p.cfg, k+1)}
			if i == 0 || i == S-1 {
				m.blob = blob
			}
			if err := p.send(ctx, i, m); err != nil {
				return engine.StepResult{}, err
			}
		}
		a.sent++
	}
	if err := p.awaitDone(ctx, step); err != nil {
		return engine.StepResult{}, err
	}
	dones := a.done[step]
	delete(a.done, step)
	a.next++
	var sumsq float64
	for _, d := range dones {
		sumsq += d.SumSq
	}
	return p.result(step, dones[S-1].Loss, sumsq, dones)
}

// awaitDone reads the control links until every stage has reported step.
func (p *Driver) awaitDone(ctx context.Context, step int) error {
	S := len(p.ctrl)
	tick := time.NewTicker(p.hb)
	defer tick.Stop()
	for !p.async.complete(step) {
		select {
		case ev := <-p.cev:
			i := ev.stage
			if ev.gen != p.gen[i] {
				continue
			}
			if ev.err != nil {
				p.gen[i]++
				return lost(i, fmt.Errorf("control link: %w", ev.err))
			}
			m := ev.m
			if m.Epoch != p.epoch {
				continue // from an aborted stream
			}
			switch m.Kind {
			case ctrlDone:
				if err := p.async.file(S, i, m); err != nil {
					return err
				}
			case ctrlLinkDown:
				return &failure{rep: scheduler.Report{Kind: scheduler.ReportLinkDown, Stage: i, Peer: m.Peer, Err: m.Err}, at: time.Now()}
			case ctrlReject:
				return &failure{rep: scheduler.Report{Kind: scheduler.ReportRejected, Stage: i, Peer: m.Peer, Err: m.Err}, at: time.Now()}
			case ctrlError:
				return fmt.Errorf("stage %d: %s", i, m.Err)
			default:
				return fmt.Errorf("stage %d sent %q while streaming", i, m.Kind)
			}
		case <-tick.C:
			if p.tick(); p.m.Pending() {
				return errPending
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
