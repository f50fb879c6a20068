package pipeline

import (
	"context"
	"time"
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
