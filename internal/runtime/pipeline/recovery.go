package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// How the driver survives failures: it decides nothing itself. What it
// observes goes to the membership machine (scheduler.Membership: who is
// dead, which link failed, which frames were bad), and it carries out the
// machine's commands — abort the attempt, relink two stages, kill an
// evicted peer, wait for or hand a stage to a spare, restore the snapshot —
// until the machine says to redo the interrupted operation, roll the run
// back to the snapshot's step, or stop. What the commands cost in time
// (detection, recovery) and what they leave in the run's records (events,
// the fault log) is the driver's, since only it has a clock.
//
// An aborted attempt never reached an optimizer step on any stage unless
// the driver had already sent "apply"; then (and whenever a stage changed
// hands) recovery rolls back to the snapshot. So the weights after a redo
// are the weights of a run without the failure: data and dropout-free
// compute are pure functions of the step.

// guard runs op, handing its failures to the membership machine and running
// it again after recovery, until it succeeds, fails for good, or recovery
// rolls the pipeline back (then an *engine.RollbackError is returned: op's
// work is moot).
func (p *Driver) guard(ctx context.Context, step int, op func() (applied bool, err error)) error {
	for {
		applied, err := op()
		var f *failure
		switch {
		case errors.As(err, &f):
			p.beginRecovery(step, f.at)
			if p.sw != nil {
				f.rep = p.swarmReport(f)
			}
			f.rep.Step, f.rep.Applied = step, applied
			p.m.Step(f.rep)
		case errors.Is(err, errPending):
			p.beginRecovery(step, p.pendingAt)
			p.m.Step(scheduler.Report{Kind: scheduler.ReportInterrupted, Step: step, Applied: applied})
		default:
			return err
		}
		redo, to, err := p.recover(ctx)
		p.rec = nil
		if err != nil {
			return err
		}
		if !redo {
			if p.async != nil {
				p.async.restart() // the stream begins again at the rollback's step
			}
			return &engine.RollbackError{To: to}
		}
	}
}

// recovering is the driver's account of the recovery in progress.
type recovering struct {
	step     int
	since    time.Time // the first detection: recovery time counts from here
	replaced bool      // a stage changed hands: recovery counts from that verdict
	pending  map[int]metrics.Fault
	restore  time.Time
}

func (p *Driver) beginRecovery(step int, at time.Time) {
	if at.IsZero() {
		at = time.Now()
	}
	p.pendingAt = time.Time{}
	if p.rec == nil {
		p.rec = &recovering{step: step, since: at, pending: map[int]metrics.Fault{}}
	}
}

// recover carries out the membership machine's commands until it ends the
// recovery: redo (true), or roll back to step to.
func (p *Driver) recover(ctx context.Context) (redo bool, to int, err error) {
	for {
		p.syncSpares()
		rd := p.m.Ready()
		p.record(rd.Notes)
		if p.sw != nil {
			p.sw.bg = append(p.sw.bg, rd.Background...)
		}
		if len(rd.Commands) == 0 {
			return false, 0, errors.New("pipeline: the membership machine stopped mid-recovery with nothing to do (a bug)")
		}
		for _, c := range rd.Commands {
			switch c.Kind {
			case scheduler.CmdRedo:
				if p.sw != nil {
					// Every stage's replicas compute the step's micro-batches again.
					p.sw.counts.MicroBatchesRedone += p.cfg.Train.MicroBatches * p.layout.Stages()
				}
				p.sw.discard()
				return true, 0, nil
			case scheduler.CmdContinue:
				// The step stands (applied on every survivor): the redo
				// returns its result instead of running it again.
				if p.sw == nil || p.sw.partial == nil {
					return false, 0, errors.New("pipeline: the membership machine says a step stands, but no step's result is known (a bug)")
				}
				p.sw.continued = p.sw.partial
				return true, 0, nil
			case scheduler.CmdRollback:
				return false, c.Step, nil
			case scheduler.CmdFail:
				return false, 0, errors.New(c.Err)
			case scheduler.CmdRelink:
				if p.sw != nil {
					return false, 0, fmt.Errorf("pipeline: the membership machine asked a swarm to relink stages (%v): a swarm drops a replica whose link fails instead (a bug)", c)
				}
			}
			err := p.carryOut(ctx, c)
			var f *failure
			if p.sw != nil && errors.As(err, &f) {
				f.rep = p.swarmReport(f)
			}
			var sf *spareFailure
			switch {
			case err == nil:
				p.m.Step(scheduler.Report{Kind: scheduler.ReportDone, Cmd: c.ID})
			case errors.As(err, &f):
				f.rep.Step = p.rec.step
				p.m.Step(f.rep)
			case errors.As(err, &sf):
				p.log.Warn("spare could not take the stage; trying another", "peer", sf.spare, "err", sf.err)
				p.m.Step(scheduler.Report{Kind: scheduler.ReportSpareFailed, Holder: sf.spare, Err: sf.err.Error()})
			case errors.Is(err, errPending):
				// The machine found another failure: Ready has the new plan.
			default:
				return false, 0, err
			}
			if err != nil {
				break // the rest of this plan is moot
			}
		}
	}
}

// spareFailure is a spare that could not be claimed or set up.
type spareFailure struct {
	spare string
	err   error
}

func (e *spareFailure) Error() string { return fmt.Sprintf("spare %s: %v", e.spare, e.err) }

// carryOut does one command of the membership machine.
func (p *Driver) carryOut(ctx context.Context, c scheduler.Command) error {
	switch c.Kind {
	case scheduler.CmdAbort:
		return p.abort(ctx, c)
	case scheduler.CmdRelink:
		ends := []int{c.Stage, c.Peer}
		for _, i := range ends {
			if err := p.send(ctx, i, ctrlMsg{Kind: ctrlRelink, Peer: ends[0] + ends[1] - i, Peers: c.Holders}); err != nil {
				return err
			}
		}
		_, err := p.collectFrom(ctx, ctrlOK, ends)
		return err
	case scheduler.CmdKill:
		if err := p.place.Kill(c.Holder); err != nil && !errors.Is(err, ErrCannotKill) {
			p.log.Warn("kill an evicted peer", "peer", c.Holder, "err", err)
		}
		return nil
	case scheduler.CmdWait:
		return p.waitForPeer(ctx)
	case scheduler.CmdHandOver:
		if p.sw != nil {
			return p.swarmHandOver(ctx, c)
		}
		return p.handOver(ctx, c)
	case scheduler.CmdRestore:
		p.rec.restore = time.Now()
		if p.snap == nil || p.snapStep != c.Step {
			return fmt.Errorf("pipeline: asked to restore the snapshot of step %d, but the driver holds none of it (a bug)", c.Step)
		}
		err := p.restoreAll(ctx, p.snap, p.snapHist)
		var f *failure
		if err != nil && !errors.As(err, &f) && !errors.Is(err, errPending) {
			return fmt.Errorf("roll back to step %d: %w", c.Step, err)
		}
		return err
	}
	return fmt.Errorf("pipeline: unexpected command %v from the membership machine", c)
}

// abort starts epoch c.Epoch on every stage but the vacant ones and waits
// until each has dropped the attempt in progress.
func (p *Driver) abort(ctx context.Context, c scheduler.Command) error {
	p.epoch = c.Epoch
	var live []int
	for i := range p.ctrl {
		// A swarm's Skip names stages, its nodes are what is gone.
		if (p.sw == nil && slices.Contains(c.Skip, i)) || (p.sw != nil && p.sw.gone[i]) {
			continue
		}
		live = append(live, i)
		if err := p.send(ctx, i, ctrlMsg{Kind: ctrlAbort}); err != nil {
			return err
		}
	}
	_, err := p.collectFrom(ctx, ctrlAborted, live)
	return err
}

// waitForPeer looks for peers joining until the machine has a stage for
// one, keeping the live stages' liveness counted meanwhile.
func (p *Driver) waitForPeer(ctx context.Context) error {
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	tick := time.NewTicker(p.hb)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-p.cev:
			// Nothing is expected from the live stages while the run
			// waits; a broken control link is a failure all the same.
			if ev.gen == p.gen[ev.stage] && ev.err != nil {
				p.gen[ev.stage]++
				return lost(ev.stage, fmt.Errorf("control link: %w", ev.err))
			}
		case <-tick.C:
			p.tick()
		case <-poll.C:
			p.syncSpares()
		}
		if p.m.Pending() {
			return errPending
		}
	}
}

// handOver makes spare c.Holder the holder of stage c.Stage.
func (p *Driver) handOver(ctx context.Context, c scheduler.Command) error {
	i, spare := c.Stage, c.Holder
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := p.place.Claim(cctx, spare)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &spareFailure{spare: spare, err: fmt.Errorf("did not connect: %w", err)}
	}
	for _, j := range c.Neighbours {
		if err := p.send(ctx, j, ctrlMsg{Kind: ctrlRelink, Peer: i, Peers: c.Holders}); err != nil {
			conn.Close()
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.place.Setup(wctx, conn, i, c.Holders); err != nil {
		conn.Close()
		if errors.Is(err, ErrSpareRefused) {
			return fmt.Errorf("spare %s for stage %d: %w", spare, i, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &spareFailure{spare: spare, err: fmt.Errorf("setup: %w", err)}
	}
	p.ctrlMu.Lock()
	p.ctrl[i] = conn
	p.ctrlMu.Unlock()
	p.closers = append(p.closers, conn.Close)
	p.holders = slices.Clone(c.Holders)
	p.startReader(i)
	_, err = p.collectFrom(ctx, ctrlOK, c.Neighbours)
	return err
}

// restoreAll loads st on every stage, and on each its part of hist (an
// async snapshot's weight versions; nil for none).
func (p *Driver) restoreAll(ctx context.Context, st *stages.State, hist [][]stages.Tensor) error {
	blob := encodeTensors(st.Tensors)
	for i := range p.ctrl {
		if p.sw != nil && p.sw.gone[i] {
			continue
		}
		m := ctrlMsg{Kind: ctrlRestore, OptimStep: st.OptimStep, blob: blob}
		if p.async != nil {
			m.Origin = p.async.origin
		}
		if i < len(hist) && len(hist[i]) > 0 {
			m.blob = encodeTensors(append(slices.Clip(st.Tensors), hist[i]...))
		}
		if err := p.send(ctx, i, m); err != nil {
			return err
		}
	}
	_, err := p.collectFrom(ctx, ctrlOK, nil)
	return err
}

// syncSpares tells the machine of peers that joined the placement.
func (p *Driver) syncSpares() {
	for _, id := range p.place.Spares() {
		if p.sw != nil {
			if _, ever := p.sw.node[id]; ever {
				continue // a swarm's node that left or died: not a newcomer
			}
		}
		if !p.m.Knows(id) {
			p.m.Step(scheduler.Report{Kind: scheduler.ReportJoined, Holder: id})
		}
	}
}

// record turns the machine's notes into the run's events, fault log and
// recovery times.
func (p *Driver) record(notes []scheduler.Note) {
	rec := p.rec
	for _, n := range notes {
		step := rec.step
		if p.sw != nil {
			p.swarmNote(n, step)
			if n.Kind == scheduler.NoteEvicted && p.sw.gone[p.sw.node[n.Holder]] {
				continue // a replica of several, evicted: swarmNote's
			}
		}
		switch n.Kind {
		case scheduler.NoteRejected:
			p.event(n.Kind.String(), step, map[string]any{"stage": n.Stage, "from": n.Peer, "err": n.Err, "count": n.Count})
		case scheduler.NoteLinkFailure:
			p.event(n.Kind.String(), step, map[string]any{"stage": n.Stage, "peer": n.Peer, "err": n.Err})
		case scheduler.NoteLinkRestored:
			secs := time.Since(rec.since).Seconds()
			p.faults.RecoverySeconds += secs
			p.faults.FaultLog = append(p.faults.FaultLog, metrics.Fault{Kind: "link_failure", Stage: n.Stage, Step: step + 1, RecoverySeconds: secs})
			p.event(n.Kind.String(), step, map[string]any{"stage": n.Stage, "peer": n.Peer, "seconds": secs})
		case scheduler.NoteDead, scheduler.NoteEvicted:
			now := time.Now()
			if !rec.replaced {
				// A takeover's recovery counts from the verdict that the
				// peer is gone, not from earlier symptoms (a silent
				// link) that the detection time already covers.
				rec.since, rec.replaced = now, true
			}
			f := metrics.Fault{Kind: n.Kind.String(), Stage: n.Stage, Step: step + 1}
			if p.place.CanHandOver() {
				f.Peer = n.Holder
			}
			p.killMu.Lock()
			if k, ok := p.killedAt[n.Stage]; ok {
				f.DetectSeconds = now.Sub(k).Seconds()
				delete(p.killedAt, n.Stage)
			}
			p.killMu.Unlock()
			rec.pending[n.Stage] = f
			p.event(n.Kind.String(), step, map[string]any{"stage": n.Stage, "peer": f.Peer, "err": n.Err, "detect_seconds": f.DetectSeconds})
			if p.sw == nil && p.place.CanHandOver() {
				p.gen[n.Stage]++ // whatever the old peer still says is moot
				go p.ctrl[n.Stage].Close()
			} // a swarm's node is dropped by swarmNote
			p.publishPeers()
		case scheduler.NoteWaiting:
			join := p.place.JoinCommand()
			msg := fmt.Sprintf("stage %d has no peer: waiting for one to join (%s)", n.Stage, join)
			p.event(n.Kind.String(), step, map[string]any{"stage": n.Stage, "join": join})
			p.log.Warn(msg)
			p.status(msg)
		case scheduler.NoteReplaced:
			f := rec.pending[n.Stage]
			delete(rec.pending, n.Stage)
			f.ReplacedBy = n.Holder
			p.faults.FaultLog = append(p.faults.FaultLog, f) // recovery time set once rolled back
			p.event(n.Kind.String(), step, map[string]any{"stage": n.Stage, "peer": n.Holder, "seconds": time.Since(rec.since).Seconds()})
			p.status(fmt.Sprintf("training (stage %d moved to %s)", n.Stage, n.Holder))
			p.publishPeers()
		case scheduler.NoteRolledBack:
			p.event(n.Kind.String(), step, map[string]any{"to_step": n.Step, "seconds": time.Since(rec.restore).Seconds()})
			// Recovery ends here, training again: the takeover and the
			// rollback both count, from the first detection.
			secs := time.Since(rec.since).Seconds()
			p.faults.RecoverySeconds += secs
			if k := len(p.faults.FaultLog); k > 0 {
				last := &p.faults.FaultLog[k-1]
				last.RolledBackTo, last.RecoverySeconds = n.Step, secs
			}
		}
	}
}

func (p *Driver) event(kind string, step int, detail map[string]any) {
	ev := metrics.Event{Type: "event", Kind: kind, Step: step + 1, WallSeconds: time.Since(p.t0).Seconds(), Detail: detail}
	if p.hooks.Event == nil { // an engine driven without Run (tests)
		p.log.Warn(kind, "step", ev.Step, "detail", detail)
		return
	}
	p.hooks.Event(ev) // at once: a run waiting for a peer says so now
}

// publishPeers tells the run who holds which stage, which spares wait and
// which peers failed.
func (p *Driver) publishPeers() {
	if p.hooks.Peers == nil {
		return
	}
	p.syncSpares()
	var out []metrics.Peer
	if p.sw != nil {
		// Every replica of every stage, with the path the driver reaches
		// it by, and the joiners syncing.
		for i, ch := range p.chains() {
			for _, k := range ch {
				out = append(out, metrics.Peer{ID: p.holders[k], Stage: i, Address: p.place.Address(), Candidate: p.ctrl[k].Stats().Candidate, State: metrics.PeerActive})
			}
		}
		for k, js := range p.sw.syncing {
			out = append(out, metrics.Peer{ID: p.holders[k], Stage: js.stage, Address: p.place.Address(), Candidate: p.ctrl[k].Stats().Candidate, State: metrics.PeerSpare})
		}
		for _, id := range p.m.Failed() {
			out = append(out, metrics.Peer{ID: id, Stage: -1, State: metrics.PeerDead})
		}
		p.hooks.Peers(out)
		return
	}
	for i, id := range p.m.Holders() {
		if id == "" {
			continue // vacant, being handed over
		}
		// The path the driver reaches the holder by; the stage links'
		// own paths are in each step's metrics.
		cand := ""
		if p.ctrl[i] != nil {
			cand = p.ctrl[i].Stats().Candidate
		}
		out = append(out, metrics.Peer{ID: id, Stage: i, Address: p.place.Address(), Candidate: cand, State: metrics.PeerActive})
	}
	for _, id := range p.m.Spares() {
		out = append(out, metrics.Peer{ID: id, Stage: -1, Address: p.place.Address(), State: metrics.PeerSpare})
	}
	for _, id := range p.m.Failed() {
		out = append(out, metrics.Peer{ID: id, Stage: -1, State: metrics.PeerDead})
	}
	p.hooks.Peers(out)
}

func (p *Driver) status(s string) {
	if p.hooks.Status != nil {
		p.hooks.Status(s)
	}
}
