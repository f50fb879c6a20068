package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/narrowband/narrowband/scheduler"
)

// How the driver hears its stages. Every worker sends a heartbeat on its
// control link each faults.heartbeat; one reader goroutine per stage notes
// when it last heard anything and passes the rest on. While the driver
// waits for replies it tells the membership machine, once per heartbeat
// interval, which stages it heard from (scheduler.ReportHeard) and that an
// interval passed (Tick): the machine decides who is dead.

// ctrlEvent is one message (or the end) of a stage's control link.
type ctrlEvent struct {
	stage, gen int
	m          ctrlMsg
	err        error
}

// failure is what the driver saw go wrong, as the membership machine takes
// it: a stage's control link broke, a stage reported a failed link or a
// rejected frame. The operation it interrupted fills in Step and Applied.
type failure struct {
	rep scheduler.Report
	at  time.Time
}

func (f *failure) Error() string {
	r := f.rep
	switch r.Kind {
	case scheduler.ReportLinkDown:
		return fmt.Sprintf("stage %d lost its link to stage %d: %s", r.Stage, r.Peer, r.Err)
	case scheduler.ReportRejected:
		return fmt.Sprintf("stage %d rejected a frame from stage %d: %s", r.Stage, r.Peer, r.Err)
	}
	return fmt.Sprintf("stage %d's peer failed: %s", r.Stage, r.Err)
}

func lost(stage int, err error) *failure {
	return &failure{rep: scheduler.Report{Kind: scheduler.ReportLost, Stage: stage, Err: err.Error()}, at: time.Now()}
}

// errPending stops an operation when the membership machine has found a
// failure by itself (a stage silent for the peer timeout) or replaced the
// command in progress.
var errPending = errors.New("pipeline: the membership machine has a failure to handle")

// startReaders starts one reader per control link.
func (p *Driver) startReaders() {
	S := len(p.ctrl)
	p.cev = make(chan ctrlEvent, 64*S)
	p.gen = make([]int, S)
	p.seen = make([]*atomic.Int64, S)
	for i := range p.seen {
		p.seen[i] = new(atomic.Int64)
	}
	p.fed = make([]int64, S)
	var rctx context.Context
	rctx, p.stopReaders = context.WithCancel(context.Background())
	p.readCtx = rctx
	for i := range p.ctrl {
		p.startReader(i)
	}
}

func (p *Driver) startReader(i int) {
	p.gen[i]++
	gen, c := p.gen[i], p.ctrl[i]
	seen := p.seen[i]
	seen.Store(time.Now().UnixNano())
	go func() {
		parts := controlReader{heard: func() { seen.Store(time.Now().UnixNano()) }}
		for {
			raw, err := parts.read(p.readCtx, c)
			var m ctrlMsg
			if err == nil {
				m, err = decodeCtrl(raw)
			}
			if err == nil && m.Kind == ctrlHeartbeat {
				continue
			}
			select {
			case p.cev <- ctrlEvent{stage: i, gen: gen, m: m, err: err}:
			case <-p.readCtx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
}

// heartbeats keeps the workers' view of the driver alive (a worker does
// nothing with them but they keep NAT bindings and links warm).
func (p *Driver) heartbeats() {
	tick := time.NewTicker(p.hb)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-p.readCtx.Done():
			return
		}
		// Without an epoch (send would read it while recovery changes
		// it): readers drop heartbeats of any epoch.
		b, err := encodeCtrl(ctrlMsg{Kind: ctrlHeartbeat})
		if err != nil {
			return
		}
		p.ctrlMu.Lock()
		conns := slices.Clone(p.ctrl)
		p.ctrlMu.Unlock()
		for i, c := range conns {
			if c != nil {
				sendControl(p.readCtx, c, b, i)
			}
		}
	}
}

// tick tells the membership machine who was heard since the last tick and
// that a heartbeat interval passed.
func (p *Driver) tick() {
	for i := range p.seen {
		if s := p.seen[i].Load(); s > p.fed[i] {
			p.fed[i] = s
			if p.sw != nil {
				// A swarm's node: the machine knows it by name.
				if !p.sw.gone[i] {
					p.m.Step(scheduler.Report{Kind: scheduler.ReportHeard, Stage: p.sw.stage[i], Holder: p.holders[i]})
				}
				continue
			}
			p.m.Step(scheduler.Report{Kind: scheduler.ReportHeard, Stage: i})
		}
	}
	p.m.Tick()
	if p.m.Pending() && p.pendingAt.IsZero() {
		p.pendingAt = time.Now()
	}
}

// collectFrom receives one message of kind want from each stage in from
// (nil: all) at the current epoch. Replies of aborted attempts are
// dropped; a broken control link, a failed link or a bad frame ends it
// with a *failure, and a failure the membership machine finds with
// errPending.
func (p *Driver) collectFrom(ctx context.Context, want ctrlKind, from []int) ([]ctrlMsg, error) {
	S := len(p.ctrl)
	if from == nil && p.sw != nil {
		from = p.live()
	}
	if from == nil {
		from = make([]int, S)
		for i := range from {
			from[i] = i
		}
	}
	out := make([]ctrlMsg, S)
	got := make([]bool, S)
	n := 0
	tick := time.NewTicker(p.hb)
	defer tick.Stop()
	for n < len(from) {
		select {
		case ev := <-p.cev:
			i := ev.stage
			if ev.gen != p.gen[i] {
				continue // a replaced peer's link
			}
			if ev.err != nil {
				p.gen[i]++ // its reader has stopped; nothing more from it
				return out, lost(i, fmt.Errorf("control link: %w", ev.err))
			}
			m := ev.m
			if m.Kind == ctrlSynced && p.sw != nil {
				p.synced(i, m) // a joiner's download, whatever the attempt
				continue
			}
			if m.Epoch != p.epoch {
				continue // from an aborted attempt
			}
			switch m.Kind {
			case ctrlLinkDown:
				return out, &failure{rep: scheduler.Report{Kind: scheduler.ReportLinkDown, Stage: i, Peer: m.Peer, Err: m.Err}, at: time.Now()}
			case ctrlReject:
				return out, &failure{rep: scheduler.Report{Kind: scheduler.ReportRejected, Stage: i, Peer: m.Peer, Err: m.Err}, at: time.Now()}
			case ctrlError:
				return out, fmt.Errorf("%s", m.Err)
			case ctrlDone:
				if p.async != nil && want != ctrlDone {
					// An async stage applied a step while the driver
					// waits for something else (an evaluation).
					if err := p.async.file(S, i, m); err != nil {
						return out, err
					}
					continue
				}
				if want != ctrlDone {
					return out, fmt.Errorf("stage %d sent %q, want %q", i, m.Kind, want)
				}
				if slices.Contains(from, i) && !got[i] {
					out[i], got[i] = m, true
					n++
				}
			case want:
				if slices.Contains(from, i) && !got[i] {
					out[i], got[i] = m, true
					n++
				}
			default:
				return out, fmt.Errorf("stage %d sent %q, want %q", i, m.Kind, want)
			}
		case <-tick.C:
			if p.tick(); p.m.Pending() {
				return out, errPending
			}
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	return out, nil
}
