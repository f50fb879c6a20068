package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/stages"
)

// How the driver survives failures (issue: survive chaos).
//
// Every stage sends a heartbeat on its control link each faults.heartbeat;
// one reader goroutine per stage notes when it last heard anything and
// passes the rest on. A stage silent for faults.peer_timeout is dead. A
// stage that finds a link silent (faults.link_timeout) or receives a bad
// frame says so instead of its reply. Then the driver:
//
//  1. aborts the attempt on every live stage (a new epoch: frames and
//     replies of the old one are dropped wherever they arrive),
//  2. for a silent link whose two ends are both still alive: has both ends
//     re-establish it through signaling (a new ICE session) and redoes
//     the step;
//  3. for a bad frame: redoes the step (the frame never reached the
//     model), evicting the sender after faults.max_rejects;
//  4. for a dead or evicted peer (WebRTC runs): gives its stage to a spare
//     waiting in the room (or waits for one to join), has the neighbours
//     link to it, and rolls every stage back to the latest snapshot,
//     which the driver takes every faults.snapshot_every steps.
//
// An aborted attempt never reached an optimizer step on any stage unless
// the driver had already sent "apply"; in that case recovery rolls back
// to the snapshot too. So the weights after a redo are the weights of a
// run without the failure: data and dropout-free compute are pure
// functions of the step.

// ctrlEvent is one message (or the end) of a stage's control link.
type ctrlEvent struct {
	stage, gen int
	m          ctrlMsg
	err        error
}

// stageFailure is what collect reports when a stage cannot go on.
type stageFailure struct {
	kind  string // "dead", "link", "reject", "evict"
	stage int    // the stage whose peer failed, or that reported
	peer  int    // link/reject: the other end (the sender of a bad frame)
	at    time.Time
	err   error
}

func (f *stageFailure) Error() string {
	switch f.kind {
	case "link":
		return fmt.Sprintf("stage %d lost its link to stage %d: %v", f.stage, f.peer, f.err)
	case "reject":
		return fmt.Sprintf("stage %d rejected a frame from stage %d: %v", f.stage, f.peer, f.err)
	}
	return fmt.Sprintf("stage %d's peer failed (%s): %v", f.stage, f.kind, f.err)
}

// startReaders starts one reader per control link.
func (p *Driver) startReaders() {
	S := len(p.ctrl)
	p.cev = make(chan ctrlEvent, 64*S)
	p.gen = make([]int, S)
	p.seen = make([]atomic.Int64, S)
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
	p.seen[i].Store(time.Now().UnixNano())
	go func() {
		for {
			raw, err := c.Recv(p.readCtx)
			if err == nil {
				p.seen[i].Store(time.Now().UnixNano())
			}
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
		for i := range p.ctrl {
			p.send(p.readCtx, i, ctrlMsg{Kind: ctrlHeartbeat})
		}
	}
}

// collectFrom receives one message of kind want from each stage in from
// (nil: all) at the current epoch. Replies of aborted attempts are
// dropped; a dead stage, a failed link or a bad frame ends it with a
// *stageFailure.
func (p *Driver) collectFrom(ctx context.Context, want ctrlKind, from []int) ([]ctrlMsg, error) {
	S := len(p.ctrl)
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
				return out, &stageFailure{kind: "dead", stage: i, at: time.Now(), err: fmt.Errorf("control link: %w", ev.err)}
			}
			m := ev.m
			if m.Epoch != p.epoch {
				continue // from an aborted attempt
			}
			switch m.Kind {
			case ctrlLinkDown:
				return out, &stageFailure{kind: "link", stage: i, peer: m.Peer, at: time.Now(), err: errors.New(m.Err)}
			case ctrlReject:
				return out, &stageFailure{kind: "reject", stage: i, peer: m.Peer, at: time.Now(), err: errors.New(m.Err)}
			case ctrlError:
				return out, fmt.Errorf("%s", m.Err)
			case want:
				if slices.Contains(from, i) && !got[i] {
					out[i], got[i] = m, true
					n++
				}
			default:
				return out, fmt.Errorf("stage %d sent %q, want %q", i, m.Kind, want)
			}
		case <-tick.C:
			for _, i := range from {
				if silent := time.Since(time.Unix(0, p.seen[i].Load())); silent > p.peerTimeout {
					return out, &stageFailure{kind: "dead", stage: i, at: time.Now(), err: fmt.Errorf("silent for %.1fs (faults.peer_timeout = %gs)", silent.Seconds(), p.peerTimeout.Seconds())}
				}
			}
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	return out, nil
}

// guard runs op, recovering from failures and running it again, until it
// succeeds, fails for good, or recovery rolls the pipeline back (then the
// *rollbackError is returned: op's work is moot).
func (p *Driver) guard(ctx context.Context, step int, op func() (applied bool, err error)) error {
	for {
		applied, err := op()
		var f *stageFailure
		if !errors.As(err, &f) {
			return err
		}
		to, err := p.recover(ctx, f, applied, step)
		if err != nil {
			return err
		}
		if to >= 0 {
			return &engine.RollbackError{To: to}
		}
		p.faults.StepsRedone++
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

// recover handles f and any failure that happens while handling it. It
// returns the step the pipeline rolled back to, or -1 if the interrupted
// operation can simply run again.
func (p *Driver) recover(ctx context.Context, f *stageFailure, applied bool, step int) (int, error) {
	rollback, replaced := applied, false
	since := f.at // the first detection: recovery time counts from here
	for {
		var next error
		switch f.kind {
		case "reject":
			p.faults.RejectedFrames++
			p.rejects[f.peer]++
			p.event("frame_rejected", step, map[string]any{"stage": f.stage, "from": f.peer, "err": f.err.Error(), "count": p.rejects[f.peer]})
			if p.rejects[f.peer] >= p.cfg.Faults.MaxRejects {
				f = &stageFailure{kind: "evict", stage: f.peer, at: f.at, err: fmt.Errorf("%d bad frames (faults.max_rejects = %d)", p.rejects[f.peer], p.cfg.Faults.MaxRejects)}
				continue
			}
			next = p.abort(ctx, -1)
		case "link":
			next = p.restoreLink(ctx, f, step, since)
		case "dead", "evict":
			if !replaced {
				// A takeover's recovery counts from the verdict that the
				// peer is gone, not from earlier symptoms (a silent link)
				// that the detection time already covers.
				since, replaced = f.at, true
			}
			next = p.replace(ctx, f, step)
			rollback = true
		default:
			return 0, fmt.Errorf("unknown failure %q", f.kind)
		}
		if errors.As(next, &f) {
			continue
		}
		if next != nil {
			return 0, next
		}
		if !rollback {
			return -1, nil
		}
		if p.snap == nil {
			return 0, fmt.Errorf("%v: no snapshot to roll back to", f)
		}
		t := time.Now()
		err := p.restoreAll(ctx, p.snap)
		if errors.As(err, &f) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("roll back to step %d: %w", p.snapStep, err)
		}
		p.faults.StepsRedone += step - p.snapStep
		p.event("rolled_back", step, map[string]any{"to_step": p.snapStep, "seconds": time.Since(t).Seconds()})
		// Recovery ends here, training again: the takeover and the
		// rollback both count, from the first detection.
		secs := time.Since(since).Seconds()
		p.faults.RecoverySeconds += secs
		if n := len(p.faults.FaultLog); n > 0 {
			last := &p.faults.FaultLog[n-1]
			last.RolledBackTo, last.RecoverySeconds = p.snapStep, secs
		}
		return p.snapStep, nil
	}
}

// abort starts a new epoch on every live stage (all but skip) and waits
// until each has dropped the attempt in progress.
func (p *Driver) abort(ctx context.Context, skip int) error {
	p.epoch++
	var live []int
	for i := range p.ctrl {
		if i == skip {
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

// restoreLink re-establishes a failed link whose two ends are alive.
func (p *Driver) restoreLink(ctx context.Context, f *stageFailure, step int, since time.Time) error {
	p.event("link_failure", step, map[string]any{"stage": f.stage, "peer": f.peer, "err": f.err.Error()})
	// A dead end also silences its links: if either end stops answering
	// the driver within the peer timeout, it is the peer that failed.
	if err := p.abort(ctx, -1); err != nil {
		return err
	}
	ends := []int{f.stage, f.peer}
	for _, i := range ends {
		if err := p.send(ctx, i, ctrlMsg{Kind: ctrlRelink, Peer: ends[0] + ends[1] - i, Peers: p.holders}); err != nil {
			return err
		}
	}
	if _, err := p.collectFrom(ctx, ctrlOK, ends); err != nil {
		return err
	}
	// Counted once restored: a link that fails because its peer died is
	// that peer's failure.
	p.faults.Failures++
	p.faults.Recoveries++
	secs := time.Since(since).Seconds()
	p.faults.RecoverySeconds += secs
	p.faults.FaultLog = append(p.faults.FaultLog, metrics.Fault{Kind: "link_failure", Stage: f.stage, Step: step + 1, RecoverySeconds: secs})
	p.event("link_restored", step, map[string]any{"stage": f.stage, "peer": f.peer, "seconds": secs})
	return nil
}

// replace gives a dead or evicted stage to a spare peer.
func (p *Driver) replace(ctx context.Context, f *stageFailure, step int) error {
	i := f.stage
	p.faults.Failures++
	rec := metrics.Fault{Kind: map[string]string{"dead": "peer_dead", "evict": "evicted"}[f.kind], Stage: i, Step: step + 1}
	if p.place.CanHandOver() {
		rec.Peer = p.holders[i]
	}
	p.killMu.Lock()
	if k, ok := p.killedAt[i]; ok {
		rec.DetectSeconds = f.at.Sub(k).Seconds()
		delete(p.killedAt, i)
	}
	p.killMu.Unlock()
	p.event(rec.Kind, step, map[string]any{"stage": i, "peer": rec.Peer, "err": f.err.Error(), "detect_seconds": rec.DetectSeconds})
	if !p.place.CanHandOver() {
		return fmt.Errorf("%v; only WebRTC runs (pipeline.transport = \"webrtc\") can hand a stage to a spare peer", f)
	}
	p.gen[i]++ // whatever the old peer still says is moot
	p.dead[rec.Peer] = true
	p.publishPeers()
	if f.kind == "evict" {
		p.place.Kill(rec.Peer) // evicted for bad data: make sure it is gone
	}
	if err := p.abort(ctx, i); err != nil {
		return err
	}
	old := p.ctrl[i]
	go old.Close() // may linger on a dead peer
	spare, c, err := p.takeSpare(ctx, i, step)
	if err != nil {
		return err
	}
	peers := slices.Clone(p.holders)
	peers[i] = spare
	nb := p.layout.Neighbours(i)
	for _, j := range nb {
		if err := p.send(ctx, j, ctrlMsg{Kind: ctrlRelink, Peer: i, Peers: peers}); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.place.Setup(wctx, c, i, peers); err != nil {
		c.Close()
		if errors.Is(err, ErrSpareRefused) {
			return fmt.Errorf("spare %s for stage %d: %w", spare, i, err)
		}
		return &stageFailure{kind: "dead", stage: i, at: time.Now(), err: fmt.Errorf("setup of spare %s: %w", spare, err)}
	}
	p.ctrl[i] = c
	p.closers = append(p.closers, c.Close)
	p.holders = peers
	p.startReader(i)
	if _, err := p.collectFrom(ctx, ctrlOK, nb); err != nil {
		return err
	}
	p.faults.Recoveries++
	rec.ReplacedBy = spare
	p.faults.FaultLog = append(p.faults.FaultLog, rec) // recovery time set once rolled back
	p.event("stage_replaced", step, map[string]any{"stage": i, "peer": spare, "seconds": time.Since(f.at).Seconds()})
	p.status(fmt.Sprintf("training (stage %d moved to %s)", i, spare))
	p.publishPeers()
	return nil
}

// publishPeers tells the run who holds which stage, which spares wait and
// which peers failed.
func (p *Driver) publishPeers() {
	if p.hooks.Peers == nil {
		return
	}
	var out []metrics.Peer
	for i, id := range p.holders {
		// The path the driver reaches the holder by; the stage links'
		// own paths are in each step's metrics.
		cand := ""
		if i < len(p.ctrl) && p.ctrl[i] != nil {
			cand = p.ctrl[i].Stats().Candidate
		}
		out = append(out, metrics.Peer{ID: id, Stage: i, Address: p.place.Address(), Candidate: cand, State: metrics.PeerActive})
	}
	for _, id := range p.spares() {
		out = append(out, metrics.Peer{ID: id, Stage: -1, Address: p.place.Address(), State: metrics.PeerSpare})
	}
	dead := slices.Collect(maps.Keys(p.dead))
	sort.Strings(dead)
	for _, id := range dead {
		out = append(out, metrics.Peer{ID: id, Stage: -1, State: metrics.PeerDead})
	}
	p.hooks.Peers(out)
}

func (p *Driver) status(s string) {
	if p.hooks.Status != nil {
		p.hooks.Status(s)
	}
}

// spares are the placement's spares that hold no stage and have not failed.
func (p *Driver) spares() []string {
	var out []string
	for _, id := range p.place.Spares() {
		if !p.dead[id] && !slices.Contains(p.holders, id) {
			out = append(out, id)
		}
	}
	return out
}

// takeSpare connects the control channel to a spare, waiting for one to
// join if there is none.
func (p *Driver) takeSpare(ctx context.Context, stage, step int) (string, transport.Conn, error) {
	waiting := false
	for {
		for _, id := range p.spares() {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			c, err := p.place.Claim(cctx, id)
			cancel()
			if err != nil {
				p.log.Warn("spare did not connect; trying another", "peer", id, "err", err)
				p.dead[id] = true
				continue
			}
			return id, c, nil
		}
		if !waiting {
			waiting = true
			join := p.place.JoinCommand()
			msg := fmt.Sprintf("stage %d has no peer: waiting for one to join (%s)", stage, join)
			p.event("waiting_for_peer", step, map[string]any{"stage": stage, "join": join})
			p.log.Warn(msg)
			p.status(msg)
		}
		select {
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// restoreAll loads st on every stage.
func (p *Driver) restoreAll(ctx context.Context, st *stages.State) error {
	blob := encodeTensors(st.Tensors)
	for i := range p.ctrl {
		if err := p.send(ctx, i, ctrlMsg{Kind: ctrlRestore, OptimStep: st.OptimStep, blob: blob}); err != nil {
			return err
		}
	}
	_, err := p.collectFrom(ctx, ctrlOK, nil)
	return err
}
