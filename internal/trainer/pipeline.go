package trainer

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/signaling"
	"github.com/narrowband/narrowband/signaling/rtc"
	"github.com/narrowband/narrowband/stages"
	"github.com/narrowband/narrowband/web"
)

// pipeline is the engine for S > 1 stages (or any run over a real
// transport): a driver that talks to one worker per stage over control
// links, while the workers exchange activations and gradients over their
// own (shaped) links.
type pipeline struct {
	cfg     config.Config
	corpus  *data.Corpus
	log     *slog.Logger
	ranges  []scheduler.Range
	ctrl    []transport.Conn // driver's end of each worker's control link
	closers []func() error
	done    chan error // workers' exit errors
	procs   []*exec.Cmd
	peers   []string // webrtc: stage → peer ID
	t0      time.Time
	x, y    []int32
	params  int64
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// Liveness and recovery (recovery.go).
	cev         chan ctrlEvent
	gen         []int
	seen        []atomic.Int64
	readCtx     context.Context
	stopReaders context.CancelFunc
	epoch       uint64
	hb          time.Duration
	peerTimeout time.Duration
	faults      metrics.Summary // only the fault counters are used
	rejects     map[int]int
	snap        *State
	snapStep    int
	lastStep    time.Duration
	killMu      sync.Mutex
	killedAt    map[int]time.Time
	killTimers  []*time.Timer
	fired       map[int]bool // fault events already injected
	notify      func(status string)
	onEvent     func(metrics.Event)
	onPeers     func([]web.Peer)
	// WebRTC runs: the coordinator's place in the room, its WebRTC setup,
	// the command that joins a peer, local peer processes by ID, and peers
	// that failed.
	coord  *signaling.Local
	rc     rtc.Config
	join   string
	procOf map[string]*exec.Cmd
	dead   map[string]bool
}

// initRecovery sets the fault-handling state up; call before starting.
func (p *pipeline) initRecovery() {
	f := p.cfg.Faults
	p.hb = time.Duration(f.HeartbeatSeconds() * float64(time.Second))
	p.peerTimeout = time.Duration(f.PeerTimeout * float64(time.Second))
	p.rejects, p.killedAt = map[int]int{}, map[int]time.Time{}
	p.procOf, p.dead, p.fired = map[string]*exec.Cmd{}, map[string]bool{}, map[int]bool{}
	p.lastStep = 100 * time.Millisecond
}

// running starts the control readers and heartbeats once every stage is
// set up.
func (p *pipeline) running() {
	p.startReaders()
	go p.heartbeats()
}

// stageRanges is the block split the config asks for.
func stageRanges(cfg config.Config) ([]scheduler.Range, error) {
	if len(cfg.Pipeline.Split) > 0 {
		return scheduler.Split(cfg.Model.NLayer, cfg.Pipeline.Split)
	}
	return scheduler.Assign(cfg.Model.NLayer, cfg.Pipeline.Stages, scheduler.GPTCosts(cfg.Model.NEmbd, cfg.Model.VocabSize))
}

func newPipeline(ctx context.Context, cfg config.Config, corpus *data.Corpus, log *slog.Logger, out string) (engine, error) {
	ranges, err := stageRanges(cfg)
	if err != nil {
		return nil, err
	}
	S := len(ranges)
	N := cfg.Train.BatchSize / cfg.Train.MicroBatches * cfg.Model.BlockSize
	if cfg.Pipeline.Processes || cfg.Pipeline.Transport == "webrtc" {
		p := &pipeline{cfg: cfg, corpus: corpus, log: log, ranges: ranges, t0: time.Now(), params: modelConfig(cfg).NumParams(),
			x: make([]int32, N), y: make([]int32, N)}
		p.initRecovery()
		start := p.startProcesses
		if cfg.Pipeline.Transport == "webrtc" {
			start = func(ctx context.Context, cfg config.Config, ranges []scheduler.Range) error {
				return p.startRTC(ctx, cfg, ranges, out)
			}
		}
		if err := start(ctx, cfg, ranges); err != nil {
			p.Close()
			return nil, err
		}
		p.running()
		return p, nil
	}
	links := make([]Links, S)
	p := &pipeline{cfg: cfg, corpus: corpus, log: log, ranges: ranges, done: make(chan error, S), t0: time.Now()}
	p.initRecovery()
	shape := func(c transport.Conn, from, to int, seed uint64) (transport.Conn, error) {
		return shapeLink(cfg, from, to, seed, c)
	}
	for i := 0; i < S; i++ {
		a, b := transport.Pipe(transport.PipeOptions{})
		p.ctrl = append(p.ctrl, a)
		links[i].Ctrl = b
		p.closers = append(p.closers, a.Close, b.Close)
	}
	for i := 0; i+1 < S; i++ {
		a, b := transport.Pipe(transport.PipeOptions{})
		p.closers = append(p.closers, a.Close, b.Close)
		if links[i].Next, err = shape(a, i, i+1, uint64(2*i+1)); err != nil {
			return nil, err
		}
		if links[i+1].Prev, err = shape(b, i+1, i, uint64(2*i+2)); err != nil {
			return nil, err
		}
		p.closers = append([]func() error{links[i].Next.Close, links[i+1].Prev.Close}, p.closers...)
	}
	switch {
	case S == 2:
		// The ends are neighbours: the tied gradient shares their link, as
		// it would share the one connection between two peers.
		links[0].Tied, links[1].Tied = links[0].Next, links[1].Prev
	case S > 2:
		// The tied embedding's gradient goes between the ends; in a real
		// deployment that is one more home link, shaped like the others.
		a, b := transport.Pipe(transport.PipeOptions{})
		p.closers = append(p.closers, a.Close, b.Close)
		if links[0].Tied, err = shape(a, 0, S-1, 0x71ed1); err != nil {
			return nil, err
		}
		if links[S-1].Tied, err = shape(b, S-1, 0, 0x71ed2); err != nil {
			return nil, err
		}
		p.closers = append([]func() error{links[0].Tied.Close, links[S-1].Tied.Close}, p.closers...)
	}
	wctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for i := 0; i < S; i++ {
		w, err := newWorker(cfg, i, ranges, links[i])
		if err != nil {
			cancel()
			p.Close()
			return nil, err
		}
		p.params += int64(w.st.NumParams())
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.done <- w.run(wctx)
		}()
	}
	// The LM head copy on the last stage is the tied embedding: count once.
	p.params = modelConfig(cfg).NumParams()
	p.x, p.y = make([]int32, N), make([]int32, N)
	p.running()
	return p, nil
}

func (p *pipeline) Params() int64 { return p.params }

func (p *pipeline) Close() error {
	for _, t := range p.killTimers {
		t.Stop()
	}
	if p.stopReaders != nil {
		p.stopReaders()
	}
	if p.cancel != nil {
		p.cancel()
	}
	for _, c := range p.closers {
		c()
	}
	p.wg.Wait()
	p.stopProcesses()
	return nil
}

func (p *pipeline) send(ctx context.Context, i int, m ctrlMsg) error {
	m.Epoch = p.epoch
	b, err := encodeCtrl(m)
	if err != nil {
		return err
	}
	if err := p.ctrl[i].Send(ctx, b); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &stageFailure{kind: "dead", stage: i, at: time.Now(), err: fmt.Errorf("control link: %w", err)}
	}
	return nil
}

// collect receives one message of kind want from every stage.
func (p *pipeline) collect(ctx context.Context, want ctrlKind) ([]ctrlMsg, error) {
	return p.collectFrom(ctx, want, nil)
}

// batchBlob is the bytes of a step's micro-batches: all tokens, then all
// targets (the first stage reads tokens, the last stage targets).
func (p *pipeline) batchBlob(step int) []byte {
	M := p.cfg.Train.MicroBatches
	B, T := p.cfg.Train.BatchSize/M, p.cfg.Model.BlockSize
	N := B * T
	blob := make([]byte, 2*M*N)
	for m := 0; m < M; m++ {
		data.Batch(p.corpus.Train, p.cfg.Run.Seed, step, m, B, T, p.x, p.y)
		for i := 0; i < N; i++ {
			blob[m*N+i] = byte(p.x[i])
			blob[M*N+m*N+i] = byte(p.y[i])
		}
	}
	return blob
}

func (p *pipeline) Step(ctx context.Context, step int, lr float64) (stepResult, error) {
	if p.coord != nil && (p.snap == nil || (step%p.cfg.Faults.SnapshotEvery == 0 && p.snapStep != step)) {
		// The point every stage rolls back to if one changes hands.
		st, err := p.State(ctx)
		if err != nil {
			return stepResult{}, err
		}
		p.snap, p.snapStep = st, step
	}
	var res stepResult
	injected := false
	t := time.Now()
	err := p.guard(ctx, step, func() (bool, error) {
		if !injected {
			injected = true
			if err := p.injectFaults(ctx, step); err != nil {
				return false, err
			}
		}
		var applied bool
		var err error
		res, applied, err = p.tryStep(ctx, step, lr)
		return applied, err
	})
	if err != nil {
		return stepResult{}, err
	}
	p.lastStep = time.Since(t)
	return res, nil
}

// tryStep is one attempt at a step; applied says whether any stage may
// have taken its optimizer step.
func (p *pipeline) tryStep(ctx context.Context, step int, lr float64) (stepResult, bool, error) {
	S := len(p.ctrl)
	blob := p.batchBlob(step)
	for i := 0; i < S; i++ {
		m := ctrlMsg{Kind: ctrlStep, Step: step, LR: lr, T0: p.t0.UnixNano()}
		if i == 0 || i == S-1 {
			m.blob = blob
		}
		if err := p.send(ctx, i, m); err != nil {
			return stepResult{}, false, err
		}
	}
	reps, err := p.collect(ctx, ctrlReport)
	if err != nil {
		return stepResult{}, false, err
	}
	var sumsq float64
	for _, r := range reps {
		sumsq += r.SumSq
	}
	scale := stages.ClipScale(sumsq, p.cfg.Train.GradClip)
	for i := 0; i < S; i++ {
		if err := p.send(ctx, i, ctrlMsg{Kind: ctrlApply, Step: step, Scale: scale}); err != nil {
			return stepResult{}, true, err
		}
	}
	dones, err := p.collect(ctx, ctrlDone)
	if err != nil {
		return stepResult{}, true, err
	}
	res := stepResult{Loss: reps[S-1].Loss, GradNorm: math.Sqrt(sumsq)}
	for i, d := range dones {
		s := d.Stats
		if s == nil {
			return stepResult{}, true, fmt.Errorf("stage %d sent no step stats", i)
		}
		idle := s.Wall - s.Busy
		if idle < 0 {
			idle = 0
		}
		res.Stages = append(res.Stages, metrics.StageStats{Stage: i, BusySeconds: s.Busy, IdleSeconds: idle, NetWait: s.NetWait})
		res.Busy += s.Busy
		res.Idle += idle
		res.NetWait += s.NetWait
		res.WireForward += s.SentFwdBytes
		res.RawForward += s.RawFwdBytes
		res.WireBackward += s.SentBwdBytes
		res.RawBackward += s.RawBwdBytes
		res.Events = append(res.Events, s.Events...)
		for _, sp := range s.Spans {
			res.Spans = append(res.Spans, metrics.Span{Stage: i, Kind: sp.Kind, Step: step + 1, Micro: sp.Micro, Start: sp.Start, End: sp.End})
		}
		if i+1 < S {
			l := metrics.LinkStats{From: i, To: i + 1, BytesForward: s.SentFwdBytes, BytesBackward: dones[i+1].Stats.SentBwdBytes, Messages: s.SentMessages + dones[i+1].Stats.SentMessages, Candidate: s.Candidate, RTTMillis: s.RTTMs}
			if wire := l.BytesForward + l.BytesBackward; wire > 0 {
				l.Ratio = float64(s.RawFwdBytes+dones[i+1].Stats.RawBwdBytes) / float64(wire)
			}
			res.Links = append(res.Links, l)
		}
	}
	return res, true, nil
}

func (p *pipeline) Eval(ctx context.Context, windows [][]byte) (float64, error) {
	S := len(p.ctrl)
	maxB := p.cfg.Train.BatchSize / p.cfg.Train.MicroBatches
	var shapes [][2]int
	var tok, tgt []byte
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
	blob := append(tok, tgt...)
	var res []ctrlMsg
	err := p.guard(ctx, p.snapStep, func() (bool, error) {
		for i := 0; i < S; i++ {
			m := ctrlMsg{Kind: ctrlEval, Shapes: shapes}
			if i == 0 || i == S-1 {
				m.blob = blob
			}
			if err := p.send(ctx, i, m); err != nil {
				return false, err
			}
		}
		var err error
		res, err = p.collect(ctx, ctrlEvalDone)
		return false, err
	})
	if err != nil {
		return 0, err
	}
	last := res[S-1]
	if last.Count == 0 {
		return 0, fmt.Errorf("evaluate: no bytes to predict")
	}
	return last.LossSum / float64(last.Count), nil
}

func (p *pipeline) State(ctx context.Context) (*State, error) {
	var res []ctrlMsg
	err := p.guard(ctx, p.snapStep, func() (bool, error) {
		for i := range p.ctrl {
			if err := p.send(ctx, i, ctrlMsg{Kind: ctrlState}); err != nil {
				return false, err
			}
		}
		var err error
		res, err = p.collect(ctx, ctrlStateIs)
		return false, err
	})
	if err != nil {
		return nil, err
	}
	st := &State{Model: modelConfig(p.cfg), OptimStep: res[0].OptimStep}
	for i, r := range res {
		ts, err := decodeTensors(r.blob)
		if err != nil {
			return nil, fmt.Errorf("stage %d state: %w", i, err)
		}
		for _, t := range ts {
			if !untiedHead(p.cfg) && (t.Name == "lm_head.weight" || t.Name == "optim.m.lm_head.weight" || t.Name == "optim.v.lm_head.weight") {
				continue // the tied embedding, already in stage 0's
			}
			st.Tensors = append(st.Tensors, t)
		}
	}
	return st, nil
}

func (p *pipeline) Restore(ctx context.Context, st *State) error {
	err := p.guard(ctx, st.Step, func() (bool, error) {
		return false, p.restoreAll(ctx, st)
	})
	if err == nil && p.coord != nil {
		p.snap, p.snapStep = st, st.Step
	}
	return err
}

// faultStats are the run's fault counters so far.
func (p *pipeline) faultStats() metrics.Summary { return p.faults }

func (p *pipeline) setHooks(status func(string), event func(metrics.Event), peers func([]web.Peer)) {
	p.notify, p.onEvent, p.onPeers = status, event, peers
	if p.coord != nil && peers != nil {
		peers(p.webPeers())
	}
}
