package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// The driver of a swarm (docs/swarm.md): stages held by several replicas,
// each a node with its own control link (ctrl and holders are indexed by
// node). Who holds which stage is the membership machine's: every step
// the driver asks it for the route (which node computes each micro-batch
// on each stage) and the stages' replicas in summing order, and sends
// both with the step. A replica that dies or whose links break is dropped
// by the machine; the step in progress is then redone by the others from
// the weights they hold (no stage rolls back: the optimizer step had not
// run), or, if every survivor had already applied it, it stands.

// swarmDrive is the driver's account of the nodes.
type swarmDrive struct {
	node  map[string]int // holder → node
	stage []int          // node → its stage
	gone  []bool         // node → dropped, left or dead: sent nothing more
	// partial is the step in progress once its loss and norm are known;
	// continued is its result when recovery says the step stands.
	partial   *engine.StepResult
	continued *engine.StepResult
	lost      int // replicas lost
	// bg are the background commands to start at the next step boundary
	// (a download begins between steps, at the source's boundary);
	// syncing the downloads in progress by joiner node.
	step    int // the step in progress, for events between reports
	bg      []scheduler.Command
	syncing map[int]*joinSync
	counts  metrics.SwarmCounts
}

func newSwarmDrive(plan *scheduler.Replicas, holders []string) *swarmDrive {
	d := &swarmDrive{node: map[string]int{}}
	for k, h := range holders {
		d.node[h] = k
		d.stage = append(d.stage, plan.StageOf(k))
		d.gone = append(d.gone, false)
	}
	return d
}

// chains are each stage's replicas as nodes, in the machine's order (the
// summing order: admission order).
func (p *Driver) chains() [][]int {
	reps := p.m.Replicas()
	out := make([][]int, len(reps))
	for i, hs := range reps {
		for _, h := range hs {
			out[i] = append(out[i], p.sw.node[h])
		}
	}
	return out
}

// route is the machine's route of the step's micro-batches, as nodes.
func (p *Driver) route() [][]int {
	r := p.m.Route(p.cfg.Train.MicroBatches)
	out := make([][]int, len(r))
	for i, hs := range r {
		out[i] = make([]int, len(hs))
		for j, h := range hs {
			out[i][j] = p.sw.node[h]
		}
	}
	return out
}

// live are the nodes that hold a stage now, in stage order.
func (p *Driver) live() []int {
	var out []int
	for _, ch := range p.chains() {
		out = append(out, ch...)
	}
	return out
}

// stageNodes are the nodes that stand for their stages where one copy is
// enough (evaluation, state): each stage's first replica; stage i itself
// without replicas.
func (p *Driver) stageNodes() []int {
	S := p.layout.Stages()
	out := make([]int, S)
	for i := range out {
		out[i] = i
	}
	if p.sw != nil {
		for i, ch := range p.chains() {
			out[i] = ch[0]
		}
	}
	return out
}

// tryStepSwarm is tryStep for a swarm.
func (p *Driver) tryStepSwarm(ctx context.Context, step int, lr float64) (engine.StepResult, bool, error) {
	if c := p.sw.continued; c != nil {
		// Recovery said the step stands: every survivor applied it.
		p.sw.continued, p.sw.partial = nil, nil
		return *c, true, nil
	}
	p.sw.step = step
	S := p.layout.Stages()
	chains, route := p.chains(), p.route()
	blob := p.batchBlob(step)
	live := p.live()
	var gone []int
	for k, g := range p.sw.gone {
		if g {
			gone = append(gone, k)
		}
	}
	for i, ch := range chains {
		for _, k := range ch {
			m := ctrlMsg{Kind: ctrlStep, Step: step, LR: lr, T0: p.t0.UnixNano(), Route: route, Chains: chains, Gone: gone}
			if i == 0 || i == S-1 {
				m.blob = blob
			}
			if err := p.send(ctx, k, m); err != nil {
				return engine.StepResult{}, false, err
			}
		}
	}
	reps, err := p.collectFrom(ctx, ctrlReport, live)
	if err != nil {
		return engine.StepResult{}, false, err
	}
	if err := p.spotCheck(ctx, step, chains, route, reps); err != nil {
		return engine.StepResult{}, false, err
	}
	var sumsq, loss float64
	for i, ch := range chains {
		first := reps[ch[0]].SumSq
		for r, k := range ch[1:] {
			// Summed gradients are the same bits on every replica, and so
			// is their sum of squares (added in the same order).
			if got := reps[k].SumSq; math.Float64bits(got) != math.Float64bits(first) {
				return engine.StepResult{}, false, fmt.Errorf("stage %d's replicas disagree on their summed gradient (sum of squares %v on %s, %v on %s, replica %d): the gradient sum is broken (a bug: please report it)", i, first, p.holders[ch[0]], got, p.holders[k], r+1)
			}
		}
		sumsq += first
	}
	// Each last replica's loss is its micro-batches' sum over the whole
	// step's count: their sum, in chain order, is the step's mean.
	for _, k := range chains[S-1] {
		loss += reps[k].Loss
	}
	p.sw.partial = &engine.StepResult{Loss: loss, GradNorm: math.Sqrt(sumsq)}
	scale := stages.ClipScale(sumsq, p.cfg.Train.GradClip)
	// Every live replica gets its apply even if one cannot be reached:
	// the others must not be left a step behind the ones already told.
	var sendErr error
	for _, k := range live {
		if err := p.send(ctx, k, ctrlMsg{Kind: ctrlApply, Step: step, Scale: scale}); err != nil && sendErr == nil {
			sendErr = err
		}
	}
	if sendErr != nil {
		return engine.StepResult{}, true, sendErr
	}
	dones, err := p.collectFrom(ctx, ctrlDone, live)
	if err != nil {
		return engine.StepResult{}, true, err
	}
	p.sw.partial = nil
	res, err := p.swarmResult(step, loss, sumsq, chains, dones)
	if err != nil {
		return engine.StepResult{}, true, err
	}
	res.Faulty = p.annotate(step, res.Stages)
	for _, k := range live {
		if s := dones[k].Stats; s != nil && s.Busy > 0 && s.Micros > 0 {
			p.m.Step(scheduler.Report{Kind: scheduler.ReportRate, Stage: p.sw.stage[k], Holder: p.holders[k], Rate: float64(s.Micros) / s.Busy})
		}
	}
	return res, true, nil
}

// swarmResult is a swarm step's record: one stages entry per replica (in
// stage order, each stage's in chain order), one links entry per stage
// boundary, summed over every replica link across it.
func (p *Driver) swarmResult(step int, loss, sumsq float64, chains [][]int, dones []ctrlMsg) (engine.StepResult, error) {
	res := engine.StepResult{Loss: loss, GradNorm: math.Sqrt(sumsq)}
	S := len(chains)
	type sums struct{ wire, raw, msgs int64 }
	fwd, bwd := make([]sums, S), make([]sums, S)
	for i, ch := range chains {
		for _, k := range ch {
			s := dones[k].Stats
			if s == nil {
				return engine.StepResult{}, fmt.Errorf("stage %d's replica %s sent no step stats", i, p.holders[k])
			}
			idle := max(s.Wall-s.Busy, 0)
			res.Stages = append(res.Stages, metrics.StageStats{Stage: i, BusySeconds: s.Busy, IdleSeconds: idle, NetWait: s.NetWait,
				Peer: p.holders[k], Key: string(p.place.Key(p.holders[k])), BytesSent: s.SentFwdBytes + s.SentBwdBytes, PeakRSS: s.PeakRSS, MicroBatches: s.Micros})
			res.Busy += s.Busy
			res.Idle += idle
			res.NetWait += s.NetWait
			res.WireForward += s.SentFwdBytes
			res.RawForward += s.RawFwdBytes
			res.WireBackward += s.SentBwdBytes
			res.RawBackward += s.RawBwdBytes
			res.WireTied += s.SentTiedBytes
			res.WireReplicas += s.SentReplicaBytes
			res.RawReplicas += s.RawReplicaBytes
			p.sw.counts.ReplayBytes += s.SentSyncBytes
			res.Events = append(res.Events, s.Events...)
			for _, sp := range s.Spans {
				res.Spans = append(res.Spans, metrics.Span{Stage: i, Kind: sp.Kind, Step: step + 1, Micro: sp.Micro, Start: sp.Start, End: sp.End})
			}
			fwd[i].wire += s.SentFwdBytes
			fwd[i].raw += s.RawFwdBytes
			bwd[i].wire += s.SentBwdBytes
			bwd[i].raw += s.RawBwdBytes
			fwd[i].msgs += s.SentMessages
		}
	}
	for i := 0; i+1 < S; i++ {
		s := dones[chains[i][0]].Stats
		l := metrics.LinkStats{From: i, To: i + 1, BytesForward: fwd[i].wire, BytesBackward: bwd[i+1].wire, Messages: fwd[i].msgs + fwd[i+1].msgs, Candidate: s.Candidate, RTTMillis: s.RTTMs}
		if wire := l.BytesForward + l.BytesBackward; wire > 0 {
			l.Ratio = float64(fwd[i].raw+bwd[i+1].raw) / float64(wire)
		}
		res.Links = append(res.Links, l)
	}
	return res, nil
}

// checkReplicaStates asks every further replica of stage i for the digest
// of its state and compares it with the first replica's (got): replicas
// apply the same step to the same weights, so any difference is a bug,
// and a run that went on would average models that are no longer one.
func (p *Driver) checkReplicaStates(ctx context.Context, i int, req ctrlMsg, got ctrlMsg) error {
	if p.sw == nil {
		return nil
	}
	ch := p.chains()[i]
	from := ch[1:]
	for _, k := range from {
		m := req
		m.HashOnly = true
		if err := p.send(ctx, k, m); err != nil {
			return err
		}
	}
	others, err := p.collectFrom(ctx, ctrlStateIs, from)
	if err != nil {
		return err
	}
	for _, k := range from {
		o := others[k]
		if o.Hash != got.Hash || o.OptimStep != got.OptimStep {
			return fmt.Errorf("stage %d: replica %s holds a different state than %s (digest %016x at optimizer step %d vs %016x at %d): the replicas drifted apart (a bug: please report it)",
				i, p.holders[k], p.holders[ch[0]], o.Hash, o.OptimStep, got.Hash, got.OptimStep)
		}
	}
	return nil
}

// swarmReport is what the membership machine takes of a failure in a
// swarm, where the driver's numbers are nodes, not stages: a broken
// control link is its node's holder lost; a link that failed or carried a
// bad frame loses the node at its far end (one of several replicas: the
// others hold the stage, and a peer whose links break cannot be trusted to
// hold one; the last replica of a stage goes to the machine's usual path).
func (p *Driver) swarmReport(f *failure) scheduler.Report {
	r := f.rep
	if r.Kind == scheduler.ReportMismatch {
		return r // already a stage and its holder (verify.go)
	}
	k, why := r.Stage, r.Err
	switch r.Kind {
	case scheduler.ReportLinkDown, scheduler.ReportRejected:
		why = fmt.Sprintf("%s: %s", p.holders[k], r.Err)
		k = r.Peer
	}
	if k < 0 || k >= len(p.sw.stage) {
		return scheduler.Report{Kind: scheduler.ReportLost, Stage: p.sw.stage[r.Stage], Holder: p.holders[r.Stage], Err: fmt.Sprintf("reported a link to node %d, which does not exist: %s", k, r.Err)}
	}
	return scheduler.Report{Kind: scheduler.ReportLost, Stage: p.sw.stage[k], Holder: p.holders[k], Err: why}
}

// dropNode forgets a node the machine no longer counts: nothing it says
// is heard any more, and its control link closes.
func (p *Driver) dropNode(holder string) {
	k, ok := p.sw.node[holder]
	if !ok || p.sw.gone[k] {
		return
	}
	p.sw.gone[k] = true
	p.gen[k]++
	if c := p.ctrl[k]; c != nil {
		go c.Close()
	}
	if err := p.place.Kill(holder); err != nil && !errors.Is(err, ErrCannotKill) {
		p.log.Warn("stop a dropped replica", "peer", holder, "err", err)
	}
}

// swarmNote records a swarm note of the membership machine as an event.
func (p *Driver) swarmNote(n scheduler.Note, step int) {
	kind := map[scheduler.NoteKind]string{
		// NoteJoining's event comes when the download starts (startSync),
		// with its source and size.
		scheduler.NoteReplicaLost: "replica_dead", scheduler.NoteJoined: "replica_joined",
		scheduler.NoteLeft: "replica_left", scheduler.NoteDropped: "replica_dropped", scheduler.NoteDemoted: "replica_demoted",
	}[n.Kind]
	switch n.Kind {
	case scheduler.NoteRolledBack:
		p.sw.counts.Rollbacks++
	case scheduler.NoteDead:
		// A stage's last replica (the chain's events say so; the
		// hand-over path takes the stage): nothing it says is heard.
		// (An evicted one is dropped below.)
		p.sw.lost++
		p.dropNode(n.Holder)
		p.publishPeers()
	}
	if kind == "" && n.Kind != scheduler.NoteEvicted {
		return
	}
	d := map[string]any{"stage": n.Stage, "peer": n.Holder}
	if n.Err != "" {
		d["reason"] = n.Err
	}
	if n.Kind == scheduler.NoteJoined || n.Kind == scheduler.NoteLeft || n.Kind == scheduler.NoteDropped || n.Kind == scheduler.NoteReplicaLost {
		d["step"] = step + 1
	}
	if kind != "" {
		p.event(kind, step, d)
	}
	switch n.Kind {
	case scheduler.NoteReplicaLost:
		p.sw.lost++
		p.faults.FaultLog = append(p.faults.FaultLog, metrics.Fault{Kind: "replica_lost", Stage: n.Stage, Step: step + 1, Peer: n.Holder})
		p.dropNode(n.Holder)
	case scheduler.NoteLeft, scheduler.NoteDropped:
		p.dropNode(n.Holder)
	case scheduler.NoteEvicted:
		// A replica evicted for failed spot checks (verify.go).
		p.evicted(n, step)
		p.event("peer_evicted", step, map[string]any{"stage": n.Stage, "peer": n.Holder, "key": string(p.place.Key(n.Holder)), "reason": n.Err, "step": step + 1})
		p.dropNode(n.Holder)
	}
	p.publishPeers()
}

// discard forgets the step in progress: it is redone from the start.
func (d *swarmDrive) discard() {
	if d != nil {
		d.partial, d.continued = nil, nil
	}
}

// joinSync is a joiner's download in progress.
type joinSync struct {
	cmd, stage, src int
	since           time.Time
}

// addNode gives a claimed peer the next node number.
func (p *Driver) addNode(holder string, stage int, c transport.Conn) int {
	p.ctrlMu.Lock()
	k := len(p.ctrl)
	p.ctrl = append(p.ctrl, c)
	p.ctrlMu.Unlock()
	p.holders = append(p.holders, holder)
	p.gen = append(p.gen, 0)
	p.seen = append(p.seen, new(atomic.Int64))
	p.fed = append(p.fed, 0)
	p.sw.node[holder] = k
	p.sw.stage = append(p.sw.stage, stage)
	p.sw.gone = append(p.sw.gone, false)
	p.closers = append(p.closers, c.Close)
	p.startReader(k)
	return k
}

// linkPeers are the nodes a new replica of stage links to: the live
// replicas of the stages beside it, of its own, and of the other end of
// the tied embedding.
func (p *Driver) linkPeers(stage int) map[int]SwarmPeer {
	out := map[int]SwarmPeer{}
	for i, ch := range p.chains() {
		if SwarmLinked(p.layout, i, stage) {
			for _, k := range ch {
				out[k] = SwarmPeer{Name: p.holders[k], Stage: i}
			}
		}
	}
	return out
}

// boundary carries out what the membership machine decided between two
// steps: admissions and drops, joiners found, and downloads to start.
func (p *Driver) swarmBoundary(ctx context.Context, step int, cmds []scheduler.Command) ([]scheduler.Command, error) {
	var rest []scheduler.Command
	for _, c := range cmds {
		switch c.Kind {
		case scheduler.CmdAdmit:
			if err := p.admitNode(ctx, c); err != nil {
				return nil, err
			}
		case scheduler.CmdDrop:
			// Dropped (left, or too slow): told to go, it stops. Its
			// link closing is no failure: the routes no longer name it.
			if k, ok := p.sw.node[c.Holder]; ok && !p.sw.gone[k] {
				if err := p.send(ctx, k, ctrlMsg{Kind: ctrlLeave, Err: c.Err}); err == nil {
					p.collectFrom(ctx, ctrlOK, []int{k}) // a peer that died meanwhile is gone all the same
				}
			}
			if c.Err == "left" {
				p.sw.counts.Leaves++
			} else {
				p.sw.counts.Drops++
			}
			p.dropNode(c.Holder)
		default:
			rest = append(rest, c)
		}
	}
	p.syncSpares()
	rd := p.m.Ready()
	for _, n := range rd.Notes {
		p.swarmNote(n, step)
	}
	p.sw.bg = append(p.sw.bg, rd.Background...)
	rest = append(rest, rd.Commands...)
	bg := p.sw.bg
	p.sw.bg = nil
	for _, c := range bg {
		if c.Kind != scheduler.CmdSync {
			return nil, fmt.Errorf("pipeline: the membership machine asked for %v in the background (a bug)", c)
		}
		if err := p.startSync(ctx, c, step); err != nil {
			return nil, err
		}
	}
	return rest, nil
}

// startSync starts joiner c.Holder's download of stage c.Stage from
// replica c.Holders[0]: claimed and set up as a node first if it is new.
func (p *Driver) startSync(ctx context.Context, c scheduler.Command, step int) error {
	sp, ok := p.place.(SwarmPlacement)
	if !ok {
		return fmt.Errorf("pipeline: %s joined, but this placement (%s) cannot add replicas to a running swarm", c.Holder, p.place.Address())
	}
	src, ok := p.sw.node[c.Holders[0]]
	if !ok || p.sw.gone[src] {
		p.m.Step(scheduler.Report{Kind: scheduler.ReportSyncFailed, Holder: c.Holder, Err: fmt.Sprintf("its source %s is gone", c.Holders[0])})
		return nil
	}
	k, known := p.sw.node[c.Holder]
	if known && p.sw.gone[k] {
		p.m.Step(scheduler.Report{Kind: scheduler.ReportSpareFailed, Holder: c.Holder, Err: "it left the swarm"})
		return nil
	}
	if !known {
		var err error
		if k, err = p.newNode(ctx, sp, c.Holder, c.Stage); err != nil {
			var sf *spareFailure
			if errors.As(err, &sf) {
				p.log.Warn("a joining peer could not be set up", "peer", c.Holder, "err", sf.err)
				p.m.Step(scheduler.Report{Kind: scheduler.ReportSpareFailed, Holder: c.Holder, Err: sf.err.Error()})
				return nil
			}
			return err
		}
	}
	if err := p.send(ctx, src, ctrlMsg{Kind: ctrlSyncServe, Peer: k}); err != nil {
		return err
	}
	got, err := p.collectFrom(ctx, ctrlOK, []int{src})
	if err != nil {
		return err
	}
	if err := p.send(ctx, k, ctrlMsg{Kind: ctrlSyncFetch, Peer: src, OptimStep: got[src].OptimStep, Count: got[src].Count}); err != nil {
		return err
	}
	if _, err := p.collectFrom(ctx, ctrlOK, []int{k}); err != nil {
		return err
	}
	if p.sw.syncing == nil {
		p.sw.syncing = map[int]*joinSync{}
	}
	p.sw.syncing[k] = &joinSync{cmd: c.ID, stage: c.Stage, src: src, since: time.Now()}
	p.event("replica_joining", step, map[string]any{"stage": c.Stage, "peer": c.Holder, "from": c.Holders[0], "bytes": got[src].Count})
	return nil
}

// newNode claims peer holder, sets it up as the next node, a replica of
// stage linked to the live nodes it may exchange anything with, and
// starts hearing it. A peer that cannot be claimed or set up is a
// *spareFailure.
func (p *Driver) newNode(ctx context.Context, sp SwarmPlacement, holder string, stage int) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := p.place.Claim(cctx, holder)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, &spareFailure{spare: holder, err: fmt.Errorf("did not connect: %w", err)}
	}
	// Its node number is the next; it becomes a node (control link read,
	// heartbeats sent) once set up: until then the setup owns the link.
	k := len(p.ctrl)
	peers := p.linkPeers(stage)
	var dialers []int
	if sp.DialsPeers() {
		// Both ends open a WebRTC link: the nodes it links to dial it
		// while it dials them.
		for n := range peers {
			if err := p.send(ctx, n, ctrlMsg{Kind: ctrlLinkTo, Peer: k, PeerStage: stage, Peers: []string{holder}}); err != nil {
				conn.Close()
				return 0, err
			}
			dialers = append(dialers, n)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = sp.SetupReplica(wctx, conn, stage, k, peers)
	cancel()
	if err != nil {
		conn.Close()
		// The nodes dialling it give up (their dial times out): their
		// answers are moot, but must not be read as a later command's.
		for _, n := range dialers {
			if _, derr := p.collectFrom(ctx, ctrlOK, []int{n}); derr != nil && ctx.Err() != nil {
				return 0, ctx.Err()
			}
		}
		return 0, &spareFailure{spare: holder, err: fmt.Errorf("setup: %w", err)}
	}
	if got := p.addNode(holder, stage, conn); got != k {
		return 0, fmt.Errorf("pipeline: %s set up as node %d but numbered %d (a bug)", holder, k, got)
	}
	if len(dialers) > 0 {
		if _, err := p.collectFrom(ctx, ctrlOK, dialers); err != nil {
			return 0, err
		}
	}
	return k, nil
}

// swarmHandOver gives a stage whose last replica was lost to spare
// c.Holder: set up as a new node of the stage (the snapshot restored on
// every node comes next, and the run rolls back to it, as a chain's).
func (p *Driver) swarmHandOver(ctx context.Context, c scheduler.Command) error {
	sp, ok := p.place.(SwarmPlacement)
	if !ok {
		return fmt.Errorf("pipeline: stage %d lost its last replica, and this placement (%s) cannot add a node to hand it to", c.Stage, p.place.Address())
	}
	if k, known := p.sw.node[c.Holder]; known {
		return &spareFailure{spare: c.Holder, err: fmt.Errorf("it was node %d of this swarm already", k)}
	}
	_, err := p.newNode(ctx, sp, c.Holder, c.Stage)
	return err
}

// synced is a joiner's word that its download ended (m.Err: it broke).
func (p *Driver) synced(k int, m ctrlMsg) {
	js := p.sw.syncing[k]
	if js == nil {
		return
	}
	if m.Err != "" {
		p.m.Step(scheduler.Report{Kind: scheduler.ReportSyncFailed, Holder: p.holders[k], Err: m.Err})
		return
	}
	p.sw.counts.StateDownloadBytes += m.Count
	p.sw.counts.StateDownloadSeconds += m.Duration
	p.sw.counts.DownloadRestarts += m.Frames
	p.event("state_download", p.sw.step, map[string]any{"stage": js.stage, "peer": p.holders[k], "from": p.holders[js.src], "bytes": m.Count, "seconds": m.Duration, "resumed": m.Frames})
	p.m.Step(scheduler.Report{Kind: scheduler.ReportDone, Cmd: js.cmd})
}

// admitNode makes a synced joiner a replica from this step on: it has
// replayed every step before it, and its state must then be its source's
// bit for bit.
func (p *Driver) admitNode(ctx context.Context, c scheduler.Command) error {
	k, ok := p.sw.node[c.Holder]
	js := p.sw.syncing[k]
	if !ok || js == nil {
		return fmt.Errorf("pipeline: the membership machine admits %s, which is not syncing (a bug)", c.Holder)
	}
	delete(p.sw.syncing, k)
	src := js.src
	if p.sw.gone[src] {
		// Its source died after the download: any live replica will do.
		src = p.chains()[c.Stage][0]
	}
	req := ctrlMsg{Kind: ctrlState, HashOnly: true}
	if err := p.send(ctx, src, req); err != nil {
		return err
	}
	ref, err := p.collectFrom(ctx, ctrlStateIs, []int{src})
	if err != nil {
		return err
	}
	if err := p.send(ctx, k, ctrlMsg{Kind: ctrlAdmit, OptimStep: ref[src].OptimStep}); err != nil {
		return err
	}
	got, err := p.collectFrom(ctx, ctrlOK, []int{k})
	if err != nil {
		return err
	}
	if got[k].Hash != ref[src].Hash || got[k].OptimStep != ref[src].OptimStep {
		return fmt.Errorf("pipeline: %s joined stage %d with a state (digest %016x at optimizer step %d) that is not its replicas' (%016x at %d): the download or its replay went wrong (a bug: please report it)",
			c.Holder, c.Stage, got[k].Hash, got[k].OptimStep, ref[src].Hash, ref[src].OptimStep)
	}
	if !p.sw.gone[js.src] {
		if err := p.send(ctx, js.src, ctrlMsg{Kind: ctrlSyncStop, Peer: k}); err != nil {
			return err
		}
		if _, err := p.collectFrom(ctx, ctrlOK, []int{js.src}); err != nil {
			return err
		}
	}
	p.sw.counts.Joins++
	return nil
}

// Swarm is the run's churn so far; nil without replicas.
func (p *Driver) swarmCounts() *metrics.SwarmCounts {
	if p.sw == nil {
		return nil
	}
	c := p.sw.counts
	c.Deaths = p.sw.lost
	return &c
}
