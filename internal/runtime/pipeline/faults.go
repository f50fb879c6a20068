package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/scheduler"
)

// injectFaults carries out the scenario's faults for this step: link faults
// at once (in the owning stage's process), kills shortly after the step
// has started, so they land mid-step.
func (p *Driver) injectFaults(ctx context.Context, step int) error {
	for k, e := range p.cfg.Faults.Events {
		if e.AtStep != step+1 || p.fired[k] {
			continue // each fires once, not again when a rollback replays its step
		}
		p.fired[k] = true
		p.log.Warn("injecting fault", "kind", e.Kind, "stage", e.Stage, "step", step+1, "duration_s", e.Duration)
		p.event("fault_injected", step, map[string]any{"kind": e.Kind, "stage": e.Stage, "duration": e.Duration})
		if p.sw != nil {
			if err := p.injectSwarm(ctx, step, e); err != nil {
				return err
			}
			continue
		}
		switch e.Kind {
		case "kill":
			delay := p.lastStep * 2 / 5
			stage, holder := e.Stage, p.holders[e.Stage]
			p.killTimers = append(p.killTimers, time.AfterFunc(delay, func() {
				at := time.Now()
				if err := p.place.Kill(holder); err != nil { // SIGKILL
					p.log.Error("cannot kill stage", "stage", stage, "holder", holder, "err", err)
					return
				}
				p.killMu.Lock()
				p.killedAt[stage] = at
				p.killMu.Unlock()
			}))
		default:
			if err := p.send(ctx, e.Stage, ctrlMsg{Kind: ctrlFault, Peer: e.Stage + 1, Fault: e.Kind, Duration: e.Duration, Mbps: e.BandwidthMbps, Frames: e.Frames}); err != nil {
				return err
			}
			if _, err := p.collectFrom(ctx, ctrlOK, []int{e.Stage}); err != nil {
				return err
			}
		}
	}
	return nil
}

// injectSwarm carries out a swarm's fault event: a replica killed
// mid-step, a replica that asks to leave, a peer that joins.
func (p *Driver) injectSwarm(ctx context.Context, step int, e config.FaultEvent) error {
	holder := ""
	if e.Kind == "kill" || e.Kind == "leave" {
		ch := p.chains()[e.Stage]
		if e.Replica >= len(ch) {
			p.log.Warn("fault event names a replica the stage does not have; skipped", "kind", e.Kind, "stage", e.Stage, "replica", e.Replica, "replicas", len(ch))
			return nil
		}
		holder = p.holders[ch[e.Replica]]
	}
	switch e.Kind {
	case "kill":
		delay := p.lastStep * 2 / 5
		p.killTimers = append(p.killTimers, time.AfterFunc(delay, func() {
			if err := p.place.Kill(holder); err != nil {
				p.log.Error("cannot kill a replica", "stage", e.Stage, "holder", holder, "err", err)
			}
		}))
	case "leave":
		p.event("replica_leaving", step, map[string]any{"stage": e.Stage, "peer": holder, "reason": "left"})
		p.m.Step(scheduler.Report{Kind: scheduler.ReportLeft, Holder: holder})
	case "lie":
		return p.injectLie(ctx, e.Stage, e.Replica, e.Fraction, e.Scale, e.Checks)
	case "join":
		sp, ok := p.place.(SwarmPlacement)
		if !ok {
			return fmt.Errorf("faults: a join at step %d, but this placement (%s) cannot start peers", step+1, p.place.Address())
		}
		name, err := sp.StartPeer(ctx)
		if err != nil {
			return fmt.Errorf("faults: start a peer to join at step %d: %w", step+1, err)
		}
		p.log.Info("a peer joins", "peer", name, "step", step+1)
	default:
		return fmt.Errorf("faults: %q at step %d: not a fault a swarm takes", e.Kind, step+1)
	}
	return nil
}
