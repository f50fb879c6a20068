package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// Driver is the Engine of a pipeline of S stages: it sends each stage's
// worker its commands over the control links of a Placement, collects the
// replies, and carries out recovery when a stage or a link fails, while
// the workers exchange activations and gradients over their own (shaped)
// links.
type Driver struct {
	cfg     config.Config
	layout  scheduler.Layout
	corpus  *data.Corpus
	log     *slog.Logger
	place   Placement
	ctrl    []transport.Conn // driver's end of each worker's control link
	ctrlMu  sync.Mutex       // ctrl's elements: a hand-over replaces one while heartbeats go out
	holders []string         // stage → who holds it
	closers []func() error
	t0      time.Time
	x, y    []int32
	params  int64
	hooks   engine.Hooks

	// Liveness (liveness.go) and recovery (recovery.go): the membership
	// machine decides, the driver carries out.
	m           *scheduler.Membership
	rec         *recovering // the recovery in progress
	cev         chan ctrlEvent
	gen         []int
	seen        []*atomic.Int64 // pointers: a swarm appends nodes while readers run
	fed         []int64         // seen values already reported to the machine
	pendingAt   time.Time       // when a tick found a failure
	readCtx     context.Context
	stopReaders context.CancelFunc
	epoch       uint64
	hb          time.Duration
	faults      metrics.Summary // recovery times and the fault log
	snap        *stages.State
	snapStep    int
	snapHist    [][]stages.Tensor // async: each stage's weight versions a restart at snapStep needs
	// boundary is the steps done (the last step boundary reached): where
	// an operation between steps stands, for the fault log and the count
	// of steps a rollback redoes.
	boundary   int
	lastStep   time.Duration
	killMu     sync.Mutex
	killedAt   map[int]time.Time
	killTimers []*time.Timer
	fired      map[int]bool // fault events already injected
	async      *asyncDrive  // the async schedule's bookkeeping (driver_async.go); nil otherwise
	// reps: the stages' replicas (driver_replicas.go); nil with one a
	// stage. ctrl and holders then list every replica, first replicas
	// first.
	reps *scheduler.Replicas
	sw   *swarmDrive  // the swarm's nodes (driver_swarm.go); nil without replicas
	vf   *verifyDrive // a swarm's spot checks (verify.go); nil without verify.fraction
}

// New drives the stages place set up for cfg's layout; it takes place
// over (Close closes it, also when New fails).
func New(cfg config.Config, layout scheduler.Layout, corpus *data.Corpus, place Placement, log *slog.Logger) (*Driver, error) {
	N := cfg.Train.BatchSize / cfg.Train.MicroBatches * cfg.Model.BlockSize
	f := cfg.Faults
	hb := f.HeartbeatSeconds()
	reps, err := replicaPlan(cfg, layout)
	if err != nil {
		place.Close()
		return nil, err
	}
	first, more := replicaHolders(reps, place.Holders())
	m, err := scheduler.NewMembership(scheduler.MembershipConfig{
		Layout: layout, Holders: first, Replicas: more,
		TimeoutTicks: int(math.Ceil(f.PeerTimeout/hb - 1e-9)), MaxRejects: f.MaxRejects,
		SnapshotEvery: f.SnapshotEvery, CanHandOver: place.CanHandOver(),
		Async: cfg.Pipeline.Schedule == scheduler.Async,
		// A swarm places peers that join on its stages.
		Join: reps != nil, KeepSpares: cfg.Pipeline.Spares, RouteByRate: cfg.Pipeline.Routing == "throughput",
		SlowFraction: cfg.Pipeline.SlowFraction, SlowSteps: cfg.Pipeline.SlowSteps,
		MaxMismatches: cfg.Verify.MaxMismatches,
	})
	if err != nil {
		place.Close()
		return nil, err
	}
	p := &Driver{cfg: cfg, layout: layout, corpus: corpus, log: log, place: place, t0: time.Now(),
		ctrl: place.Control(), holders: place.Holders(), m: m,
		// The LM head copy on the last stage is the tied embedding: count once.
		params: engine.ModelConfig(cfg).NumParams(),
		x:      make([]int32, N), y: make([]int32, N),
		hb:       time.Duration(hb * float64(time.Second)),
		killedAt: map[int]time.Time{}, fired: map[int]bool{},
		lastStep: 100 * time.Millisecond, reps: reps,
	}
	if reps != nil {
		p.sw = newSwarmDrive(reps, p.holders)
		if cfg.Verify.Checks() {
			p.vf = newVerifyDrive(cfg.Verify.Fraction)
		}
	}
	if cfg.Pipeline.Schedule == scheduler.Async {
		p.async = newAsyncDrive(scheduler.Pipeline{Schedule: scheduler.Async, Stages: layout.Stages(), Micro: cfg.Train.MicroBatches, InFlight: InFlight(cfg)})
	}
	p.startReaders()
	go p.heartbeats()
	return p, nil
}

func (p *Driver) Params() int64 { return p.params }

func (p *Driver) Close() error {
	for _, t := range p.killTimers {
		t.Stop()
	}
	if p.stopReaders != nil {
		p.stopReaders()
	}
	for _, c := range p.closers {
		c()
	}
	return p.place.Close()
}

func (p *Driver) send(ctx context.Context, i int, m ctrlMsg) error {
	m.Epoch = p.epoch
	b, err := encodeCtrl(m)
	if err != nil {
		return err
	}
	if err := sendControl(ctx, p.ctrl[i], b, i); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return lost(i, fmt.Errorf("control link: %w", err))
	}
	return nil
}

// collect receives one message of kind want from every stage.
func (p *Driver) collect(ctx context.Context, want ctrlKind) ([]ctrlMsg, error) {
	return p.collectFrom(ctx, want, nil)
}

// batchBlob is the bytes of a step's micro-batches: all tokens, then all
// targets (the first stage reads tokens, the last stage targets), each id
// in idWidth bytes.
func (p *Driver) batchBlob(step int) []byte {
	M := p.cfg.Train.MicroBatches
	B, T := p.cfg.Train.BatchSize/M, p.cfg.Model.BlockSize
	N := B * T
	w := idWidth(p.cfg.Model.VocabSize)
	blob := make([]byte, 2*M*N*w)
	for m := 0; m < M; m++ {
		data.Batch(p.corpus.Train, uint64(p.cfg.Run.Seed), step, m, B, T, p.x, p.y)
		putIDs(blob[m*N*w:], p.x[:N], w)
		putIDs(blob[(M*N+m*N)*w:], p.y[:N], w)
	}
	return blob
}

func (p *Driver) Step(ctx context.Context, step int, lr float64) (engine.StepResult, error) {
	p.boundary = step
	p.m.Step(scheduler.Report{Kind: scheduler.ReportStepBegins, Step: step})
	rd := p.m.Ready()
	cmds := rd.Commands
	if p.sw != nil {
		for _, n := range rd.Notes {
			p.swarmNote(n, step)
		}
		p.sw.bg = append(p.sw.bg, rd.Background...)
		var err error
		if cmds, err = p.swarmBoundary(ctx, step, cmds); err != nil {
			return engine.StepResult{}, err
		}
	}
	for _, c := range cmds {
		if c.Kind != scheduler.CmdSnapshot {
			return engine.StepResult{}, fmt.Errorf("pipeline: the membership machine asked for %v before step %d (a bug)", c, step+1)
		}
		// The point every stage rolls back to if one changes hands
		// (async: after any failure).
		st, hist, err := p.gather(ctx, p.async != nil)
		if err != nil {
			return engine.StepResult{}, err
		}
		p.snap, p.snapStep, p.snapHist = st, step, hist
		p.m.Step(scheduler.Report{Kind: scheduler.ReportSnapshot, Step: step})
	}
	var res engine.StepResult
	injected := false
	t := time.Now()
	err := p.guard(ctx, step, func() (bool, error) {
		if !injected {
			injected = true
			if err := p.injectFaults(ctx, step); err != nil {
				return false, err
			}
		}
		if p.async != nil {
			// Applied, always: the stages are in the middle of several
			// steps (the membership machine knows, and rolls back).
			var err error
			res, err = p.asyncStep(ctx, step, lr)
			return true, err
		}
		var applied bool
		var err error
		if p.sw != nil {
			res, applied, err = p.tryStepSwarm(ctx, step, lr)
			return applied, err
		}
		res, applied, err = p.tryStep(ctx, step, lr)
		return applied, err
	})
	if err != nil {
		return engine.StepResult{}, err
	}
	p.lastStep = time.Since(t)
	p.boundary = step + 1
	return res, nil
}

// tryStep is one attempt at a step; applied says whether any stage may
// have taken its optimizer step.
func (p *Driver) tryStep(ctx context.Context, step int, lr float64) (engine.StepResult, bool, error) {
	S := len(p.ctrl)
	blob := p.batchBlob(step)
	for i := 0; i < S; i++ {
		m := ctrlMsg{Kind: ctrlStep, Step: step, LR: lr, T0: p.t0.UnixNano()}
		if i == 0 || i == S-1 {
			m.blob = blob
		}
		if err := p.send(ctx, i, m); err != nil {
			return engine.StepResult{}, false, err
		}
	}
	reps, err := p.collect(ctx, ctrlReport)
	if err != nil {
		return engine.StepResult{}, false, err
	}
	var sumsq float64
	for _, r := range reps {
		sumsq += r.SumSq
	}
	scale := stages.ClipScale(sumsq, p.cfg.Train.GradClip)
	for i := 0; i < S; i++ {
		if err := p.send(ctx, i, ctrlMsg{Kind: ctrlApply, Step: step, Scale: scale}); err != nil {
			return engine.StepResult{}, true, err
		}
	}
	dones, err := p.collect(ctx, ctrlDone)
	if err != nil {
		return engine.StepResult{}, true, err
	}
	res, err := p.result(step, reps[S-1].Loss, sumsq, dones)
	return res, true, err
}

// result is a step's record from every stage's ctrlDone.
func (p *Driver) result(step int, loss, sumsq float64, dones []ctrlMsg) (engine.StepResult, error) {
	return p.laneResult(step, loss, sumsq, dones, p.holders)
}

// laneResult is result for one lane of replicas (every stage without
// them), held by holders.
func (p *Driver) laneResult(step int, loss, sumsq float64, dones []ctrlMsg, holders []string) (engine.StepResult, error) {
	S := len(dones)
	res := engine.StepResult{Loss: loss, GradNorm: math.Sqrt(sumsq)}
	for i, d := range dones {
		s := d.Stats
		if s == nil {
			return engine.StepResult{}, fmt.Errorf("stage %d sent no step stats", i)
		}
		idle := s.Wall - s.Busy
		if idle < 0 {
			idle = 0
		}
		res.Stages = append(res.Stages, metrics.StageStats{Stage: i, BusySeconds: s.Busy, IdleSeconds: idle, NetWait: s.NetWait,
			Peer: holders[i], Key: string(p.place.Key(holders[i])), BytesSent: s.SentFwdBytes + s.SentBwdBytes, PeakRSS: s.PeakRSS})
		res.Busy += s.Busy
		res.Idle += idle
		res.NetWait += s.NetWait
		res.WireForward += s.SentFwdBytes
		res.RawForward += s.RawFwdBytes
		res.WireBackward += s.SentBwdBytes
		res.RawBackward += s.RawBwdBytes
		res.WireTied += s.SentTiedBytes
		res.Events = append(res.Events, s.Events...)
		for _, sp := range s.Spans {
			res.Spans = append(res.Spans, metrics.Span{Stage: i, Kind: sp.Kind, Step: step + 1, Micro: sp.Micro, Start: sp.Start, End: sp.End, Of: sp.Of, Version: sp.Ver})
		}
		if i+1 < S {
			l := metrics.LinkStats{From: i, To: i + 1, BytesForward: s.SentFwdBytes, BytesBackward: dones[i+1].Stats.SentBwdBytes, Messages: s.SentMessages + dones[i+1].Stats.SentMessages, Candidate: s.Candidate, RTTMillis: s.RTTMs}
			if wire := l.BytesForward + l.BytesBackward; wire > 0 {
				l.Ratio = float64(s.RawFwdBytes+dones[i+1].Stats.RawBwdBytes) / float64(wire)
			}
			res.Links = append(res.Links, l)
		}
	}
	return res, nil
}

func (p *Driver) Eval(ctx context.Context, windows [][]int32) (float64, error) {
	S := p.layout.Stages()
	maxB := p.cfg.Train.BatchSize / p.cfg.Train.MicroBatches
	var shapes [][2]int
	var tok, tgt []int32
	for i := 0; i < len(windows); {
		T := len(windows[i]) - 1
		j := i
		for j < len(windows) && j-i < maxB && len(windows[j])-1 == T {
			j++
		}
		shapes = append(shapes, [2]int{j - i, T})
		for _, w := range windows[i:j] {
			tok = append(tok, w[:T]...)
			tgt = append(tgt, w[1:]...)
		}
		i = j
	}
	w := idWidth(p.cfg.Model.VocabSize)
	blob := make([]byte, (len(tok)+len(tgt))*w)
	putIDs(blob, tok, w)
	putIDs(blob[len(tok)*w:], tgt, w)
	var res []ctrlMsg
	var nodes []int
	err := p.guard(ctx, p.between(), func() (bool, error) {
		nodes = p.stageNodes()
		var chains [][]int
		if p.sw != nil {
			chains = p.chains()
		}
		for i := 0; i < S; i++ {
			m := ctrlMsg{Kind: ctrlEval, Shapes: shapes, Chains: chains}
			if p.async != nil {
				m.Step = p.async.next - 1 // the copy of the last step done
			}
			if i == 0 || i == S-1 {
				m.blob = blob
			}
			if err := p.send(ctx, nodes[i], m); err != nil {
				return false, err
			}
		}
		var err error
		// With replicas the first ones evaluate: every replica of a stage
		// holds the same weights.
		res, err = p.collectFrom(ctx, ctrlEvalDone, nodes)
		return false, err
	})
	if err != nil {
		return 0, err
	}
	last := res[nodes[S-1]]
	if last.Count == 0 {
		return 0, fmt.Errorf("evaluate: no bytes to predict")
	}
	return last.LossSum / float64(last.Count), nil
}

func (p *Driver) State(ctx context.Context) (*stages.State, error) {
	st, _, err := p.gather(ctx, false)
	return st, err
}

// gather is State; with history (an async snapshot) also each stage's
// weight versions that a restart at the next step runs its first forwards
// on, kept apart from the state (a checkpoint never holds them).
func (p *Driver) gather(ctx context.Context, history bool) (*stages.State, [][]stages.Tensor, error) {
	var st *stages.State
	var hist [][]stages.Tensor
	err := p.guard(ctx, p.between(), func() (bool, error) {
		st = &stages.State{Model: engine.ModelConfig(p.cfg)}
		S := p.layout.Stages()
		hist = make([][]stages.Tensor, S)
		// One stage at a time, each stage's bytes copied into st and let
		// go before the next is asked for: a stage's state is weights and
		// two moments (170 MB a stage for a GPT-2-small in 8 stages), and
		// all of them at once would burst into the coordinator together,
		// starving the links' keepalives and doubling its memory.
		nodes := p.stageNodes()
		for i := 0; i < S; i++ {
			req := ctrlMsg{Kind: ctrlState, Hold: history}
			if p.async != nil {
				req.Step = p.async.next - 1 // the copy of the last step done
			}
			k := nodes[i]
			if err := p.send(ctx, k, req); err != nil {
				return false, err
			}
			got, err := p.collectFrom(ctx, ctrlStateIs, []int{k})
			if err != nil {
				return false, err
			}
			all, err := decodeTensors(got[k].blob)
			if err != nil {
				return false, fmt.Errorf("stage %d state: %w", i, err)
			}
			if err := p.checkReplicaStates(ctx, i, req, got[k]); err != nil {
				return false, err
			}
			var ts []stages.Tensor
			for _, t := range all {
				if strings.HasPrefix(t.Name, asyncPrefix) {
					hist[i] = append(hist[i], t)
				} else {
					ts = append(ts, t)
				}
			}
			if i == 0 {
				st.OptimStep = got[k].OptimStep
			} else if p.async != nil && got[k].OptimStep != st.OptimStep {
				return false, fmt.Errorf("async: stage %d holds its copy of step %d, stage 0 of step %d: a checkpoint needs every stage at one step (async keeps copies only at the steps engine.KeepsState names: eval and checkpoint intervals and the end)", i, got[k].OptimStep, st.OptimStep)
			}
			// A tied head is the embedding, already in stage 0's part.
			tied := !engine.UntiedHead(p.cfg)
			if tied && i == S-1 && i > 0 && p.async == nil {
				if err := sameTiedCopies(st.Tensors, ts); err != nil {
					return false, err
				}
			}
			st.AddTensors(ts, st.OptimStep, tied)
		}
		return false, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return st, hist, nil
}

func (p *Driver) Restore(ctx context.Context, st *stages.State) error {
	if p.async != nil {
		// A resumed async run: the stream begins again here, its pipe
		// refilled from scratch (docs/async.md, "Resume").
		p.async.origin = st.Step
		p.async.restart()
	}
	err := p.guard(ctx, st.Step, func() (bool, error) {
		return false, p.restoreAll(ctx, st, nil)
	})
	if err == nil {
		p.boundary = st.Step
	}
	if err == nil && (p.place.CanHandOver() || p.async != nil) {
		p.snap, p.snapStep, p.snapHist = st, st.Step, nil
		p.m.Step(scheduler.Report{Kind: scheduler.ReportSnapshot, Step: st.Step})
	}
	return err
}

// between is the step an operation between steps (evaluation, state,
// the snapshot at a boundary) counts as for recovery: under async the
// stream runs on meanwhile, so the next step awaited; otherwise the
// boundary it stands at. A rollback redoes from the snapshot up to it, and
// the fault log names the step after it. (It was the snapshot's step: a
// peer lost while the next snapshot was gathered was logged up to
// snapshot_every steps early, with none counted as redone.)
func (p *Driver) between() int {
	if p.async != nil && p.async.sent >= 0 {
		return p.async.next
	}
	return p.boundary
}

// Snapshot is the copy of every stage the driver keeps to roll back to
// (WebRTC runs), nil where it keeps none.
func (p *Driver) Snapshot() *stages.State {
	if p.snap == nil {
		return nil
	}
	st := *p.snap
	st.Step = p.snapStep
	return &st
}

// Faults are the run's fault counters so far.
func (p *Driver) Faults() metrics.Summary {
	f := p.faults
	c := p.m.Counts()
	f.Failures, f.Recoveries, f.RejectedFrames, f.StepsRedone = c.Failures, c.Recoveries, c.RejectedFrames, c.StepsRedone
	f.Swarm = p.swarmCounts()
	if f.Swarm != nil {
		f.Swarm.Verify = p.verifyCounts()
	}
	return f
}

// SetHooks sets how the driver reports what happens between steps, and
// reports who holds which stage at once.
func (p *Driver) SetHooks(h engine.Hooks) {
	p.hooks = h
	p.publishPeers()
}

// sameTiedCopies checks that the last stage's LM head is bit for bit the
// first stage's token embedding, as tying means: the two stages each apply
// the same summed gradient to their own copy, and a codec or exchange that
// let the copies drift would train a model that no longer exists.
func sameTiedCopies(first, last []stages.Tensor) error {
	var emb, head *stages.Tensor
	for i := range first {
		if n := first[i].Name; n == "transformer.wte.weight" || n == "model.embed_tokens.weight" {
			emb = &first[i]
		}
	}
	for i := range last {
		if last[i].Name == "lm_head.weight" {
			head = &last[i]
		}
	}
	if emb == nil || head == nil {
		return nil // a split without both (nothing to compare)
	}
	if len(emb.Data) != len(head.Data) {
		return fmt.Errorf("tied embedding: the first stage's %s has %d values, the last stage's lm_head.weight %d", emb.Name, len(emb.Data), len(head.Data))
	}
	for j := range emb.Data {
		if math.Float32bits(emb.Data[j]) != math.Float32bits(head.Data[j]) {
			return fmt.Errorf("tied embedding: the last stage's lm_head.weight differs from the first stage's %s at value %d (%v vs %v): the two copies drifted apart (a bug: please report it)", emb.Name, j, head.Data[j], emb.Data[j])
		}
	}
	return nil
}
