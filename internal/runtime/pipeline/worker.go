package pipeline

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// ConstrainOnly (tests only) keeps the subspace constraint on the model but
// sends fp32 over the links: the reference the subspace codec must match.
var ConstrainOnly = false

// evalStep marks the frames of an evaluation pass, which runs between
// optimizer steps outside the schedule (below the epoch bits, see
// frameStep).
const evalStep = 1<<epochShift - 1

// stampSize is the prefix of every tensor payload: the sender's clock (unix
// ns, 8 bytes), so a receiver can tell time spent waiting for a message on
// the wire from time spent waiting for the sender to compute it; and the
// throughput (bytes/s, float32) at which the sender last received from the
// receiver, the feedback compression.rank = "auto" steers by.
const stampSize = 12

// Links are one worker's connections. Prev/Next are nil at the ends; Tied
// connects the first and last stage (nil for a 1-stage pipeline).
type Links struct {
	Ctrl, Prev, Next, Tied transport.Conn
	// Mesh (a swarm's worker, worker_swarm.go) are its links to other
	// nodes by node number, in place of Prev, Next and Tied.
	Mesh map[int]transport.Conn
}

// Worker runs one pipeline stage: it carries out what its StageMachine
// says, moving tensors over its links, and answers the driver's commands.
type Worker struct {
	id, S, M    int
	B, T, C     int
	V, idw      int // vocabulary, and bytes per id in batch blobs (idWidth)
	first, last bool
	st          *stages.Stage
	opt         *stages.AdamW
	sm          *scheduler.StageMachine // GPipe, 1F1B; nil under async
	asy         *asyncRun               // async (worker_async.go); nil otherwise
	spec        scheduler.Pipeline
	links       Links // as set up; net holds the live ones
	base        int   // global step of the machine's step 0
	started     bool
	evalSlot    int
	encBuf      []byte
	t0          time.Time
	stats       workerStats
	// ownProcess: this worker is alone in its process (a stage process or a
	// WebRTC peer), so the process's peak RSS is the stage's, and it is
	// reported with every step to be held against the memory plan.
	ownProcess bool

	// rep: this worker is one of several replicas of its stage
	// (worker_replicas.go); nil when it holds the stage alone.
	rep *replicaSet
	// A swarm's joins (worker_sync.go): the nodes this replica sends each
	// step to replay; the download of a joiner; and a dropped replica's
	// last word.
	replayTo     map[int]bool
	sync         *syncer
	syncRestarts int
	leaving      bool
	dial         func(ctx context.Context, node, stage int, peer string) (transport.Conn, error)
	// vf: the spot checks' state (worker_verify.go).
	vf verifier

	codec workerCodecs
	ctl   workerControl
	net   workerNet
	rx    received
	rate  feedback
}

// workerCodecs are the codecs of a worker's links: one per direction of
// each link, and separate ones for evaluation so that evaluating never
// disturbs error-feedback state; the auto-rank controllers; and the
// subspace constraint the codec needs on the model.
type workerCodecs struct {
	encNext, decPrev, encPrev, decNext *compression.LinkCodec
	evalEnc, evalDec                   *compression.LinkCodec
	autoNext, autoPrev                 *compression.AutoRank
	con                                *constraint // subspace: keeps residual writes in span(U)
	untied                             bool        // the LM head is not tied to the embedding: no tied-gradient sum
	tiedOwn                            []float32   // subspace: this stage's tied-gradient coefficients (V×k)
	// tc: the transform codec's stateful ends (codec_tc.go); when set,
	// the LinkCodecs above are nil and frames pick their coder by type.
	tc *tcLinks
	// tied codes the tied-embedding gradient exchange
	// (compression.tied_precision); nil: raw fp32.
	tied *compression.LinkCodec
}

// workerControl is the worker's side of the control link: replies and
// heartbeats share ctrlMu; ctrlCh delivers the driver's commands in
// order; an abort cancels the command in progress (opCancel) and starts
// a new epoch.
type workerControl struct {
	ctrlMu       sync.Mutex
	ctrlCh       chan ctrlMsg
	pendingAbort *ctrlMsg // an abort read while waiting for another command
	opMu         sync.Mutex
	opCancel     context.CancelFunc
	aborted      atomic.Uint64 // the newest abort's epoch
	epoch        uint64        // the attempt in progress
}

// workerNet is the worker's links to its neighbours by their stage (see
// worker_links.go), the faults injected on them, and what keeps them
// honest.
type workerNet struct {
	linkMu          sync.Mutex
	nbr             map[int]*link
	faults          map[int]*linkFaults
	hb, linkTimeout time.Duration
	nextID, prevID  int // neighbour stages, -1 at the ends
	tiedID          int // the other end of the tied embedding, -1 if none
	inbox           chan inMsg
	// seen holds (type, step, micro) of the frames taken in this step:
	// a duplicate is dropped even after its tensor was consumed.
	seen map[[3]int]bool
	// relink re-establishes the link to stage peer (WebRTC: a new ICE
	// session through signaling); nil where links do not break by
	// themselves (in-process pipes, loopback TCP).
	relink func(ctx context.Context, peer int, peers []string) (transport.Conn, error)
	runCtx context.Context
}

// received are tensors that arrived and wait for the compute that uses
// them, decoded, by (step, micro), and the buffers to reuse.
type received struct {
	acts, grads map[[2]int][]float32
	toks        map[[2]int][]int32 // token ids that came with an activation (subspace)
	tgts        map[[2]int][]int32 // target ids that came with a gradient (subspace-tc)
	// The step's tokens and targets (first and last stage: from the
	// driver's batch; empty elsewhere), which a subspace-tc decoder reads
	// when the payload does not carry them.
	batchTok, batchTgt []int32
	tiedIn             []float32
	free               [][]float32
}

// feedback is the throughput of what this stage received, per direction,
// fed back to the sender on the next frame going the other way, and the
// compute time the auto-rank controller weighs it against.
type feedback struct {
	actRate, gradRate float32
	computePerMicro   float64 // forward+backward seconds of the last micro-batch pair
	fwdSecs, bwdSecs  float64
}

type inMsg struct {
	from    *link
	h       wire.Header
	payload []byte
	at      time.Time
	err     error // the link failed
	bad     error // the frame failed its checks
}

// SetOwnProcess says the worker is alone in its process: its steps then
// report the process's peak RSS as the stage's.
func (w *Worker) SetOwnProcess() { w.ownProcess = true }

// PeakRSS is this process's peak resident set (VmHWM of
// /proc/self/status) in bytes; 0 where the system does not say.
func PeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// NewWorker builds the worker of stage id of layout, linked by links; Run
// serves the driver.
func NewWorker(cfg config.Config, layout scheduler.Layout, id int, links Links) (*Worker, error) {
	S, M := layout.Stages(), cfg.Train.MicroBatches
	kind := cfg.Pipeline.Schedule
	spec := scheduler.Pipeline{Schedule: kind, Stages: S, Micro: M, Lookahead: cfg.Pipeline.Lookahead}
	var sm *scheduler.StageMachine
	var slots int // activation slots of the schedule (evaluation has one more)
	var am *scheduler.AsyncMachine
	var err error
	if kind == scheduler.Async {
		spec.InFlight = InFlight(cfg)
		if am, err = scheduler.NewAsyncMachine(spec, id, cfg.Run.Steps); err != nil {
			return nil, err
		}
		slots = am.MaxInFlight()
	} else {
		if sm, err = scheduler.NewStage(spec, id); err != nil {
			return nil, err
		}
		slots = sm.MaxInFlight()
	}
	r := layout.Range(id)
	B := cfg.Train.BatchSize / M
	first, last := layout.First(id), layout.Last(id)
	// A peer on another machine checks its own part against its own
	// memory before allocating it.
	need := stages.EstimateMemory(engine.ModelConfig(cfg), r.Lo, r.Hi, first, last, B, slots+1).Total()
	if err := engine.CheckMemory(fmt.Sprintf("stage %d (blocks %v)", id, r), need, engine.Available()); err != nil {
		return nil, err
	}
	st, err := stages.NewStage(engine.ModelConfig(cfg), r.Lo, r.Hi, first, last, B, slots+1)
	if err != nil {
		return nil, fmt.Errorf("stage %d: %w", id, err)
	}
	st.Init(uint64(cfg.Run.Seed))
	opt, err := stages.NewAdamW(st.Params(), engine.AdamConfig(cfg))
	if err != nil {
		return nil, err
	}
	if am != nil {
		if err := opt.SetDelayCorrection(cfg.Train.DelayCorrection, am.Delay()); err != nil {
			return nil, fmt.Errorf("stage %d: %w", id, err)
		}
	}
	w := &Worker{
		id: id, S: S, M: M, B: B, T: cfg.Model.BlockSize, C: cfg.Model.NEmbd,
		V: cfg.Model.VocabSize, idw: idWidth(cfg.Model.VocabSize),
		first: first, last: last, st: st, opt: opt, sm: sm, spec: spec, links: links,
		evalSlot: slots,
		ctl:      workerControl{ctrlCh: make(chan ctrlMsg, 16)},
		net: workerNet{
			inbox: make(chan inMsg, 4*M+16+2*slots),
			nbr:   map[int]*link{}, faults: map[int]*linkFaults{}, seen: map[[3]int]bool{},
			hb:          time.Duration(cfg.Faults.HeartbeatSeconds() * float64(time.Second)),
			linkTimeout: time.Duration(cfg.Faults.LinkTimeoutSeconds() * float64(time.Second)),
			prevID:      layout.Prev(id), nextID: layout.Next(id), tiedID: layout.Tied(id),
		},
		rx: received{acts: map[[2]int][]float32{}, grads: map[[2]int][]float32{}, toks: map[[2]int][]int32{}, tgts: map[[2]int][]int32{}},
	}
	if am != nil {
		if w.asy, err = newAsyncRun(cfg, spec, id, st); err != nil {
			return nil, err
		}
	}
	cc := cfg.Compression
	if p := cc.TiedPrecision; p != compression.FP32 && S > 1 && (first || last) && !engine.UntiedHead(cfg) {
		m := compression.MethodBF16
		if p == compression.Int8 {
			m = compression.MethodInt8
		}
		tc := compression.DefaultConfig()
		tc.Method, tc.BlockSize = m, cc.BlockSize
		if w.codec.tied, err = compression.NewLink(tc, cfg.Model.NEmbd, cfg.Model.VocabSize, uint64(cfg.Run.Seed)); err != nil {
			return nil, err
		}
	}
	if cc.Method == compression.MethodSubspaceTC {
		if w.asy != nil {
			return nil, fmt.Errorf("stage %d: compression.method = \"subspace-tc\" does not run under pipeline.schedule = \"async\" yet (its coders are not kept per weight version); use \"1f1b\" or \"gpipe\"", id)
		}
		if w.codec.tc, err = newTCLinks(cfg, id, S); err != nil {
			return nil, fmt.Errorf("stage %d: %w", id, err)
		}
		w.codec.untied = engine.UntiedHead(cfg)
		w.codec.con = newConstraint(st, w.codec.tc.sub, id, S, w.codec.untied)
		if w.codec.con != nil {
			if err := w.codec.con.projectWeights(); err != nil {
				return nil, err
			}
		}
		return w, nil
	}
	mk := func() (*compression.LinkCodec, error) {
		return compression.NewLink(cc, cfg.Model.NEmbd, cfg.Model.VocabSize, uint64(cfg.Run.Seed))
	}
	for _, p := range []**compression.LinkCodec{&w.codec.encNext, &w.codec.decPrev, &w.codec.encPrev, &w.codec.decNext, &w.codec.evalEnc, &w.codec.evalDec} {
		if *p, err = mk(); err != nil {
			return nil, err
		}
	}
	if cc.Method == compression.MethodLowRank && cc.Rank == compression.RankAuto {
		ladder := compression.DefaultLadder(cfg.Model.NEmbd, cfg.Model.NEmbd/2)
		if w.codec.autoNext, err = compression.NewAutoRank(compression.DefaultAutoRankConfig(ladder), 0); err != nil {
			return nil, err
		}
		if w.codec.autoPrev, err = compression.NewAutoRank(compression.DefaultAutoRankConfig(ladder), 0); err != nil {
			return nil, err
		}
		w.codec.encNext.Codec.(*compression.LowRank).Apply(w.codec.autoNext.Current())
		w.codec.encPrev.Codec.(*compression.LowRank).Apply(w.codec.autoPrev.Current())
	}
	w.codec.untied = engine.UntiedHead(cfg)
	if sub, ok := w.codec.encNext.Codec.(*compression.Subspace); ok {
		if w.codec.con = newConstraint(st, sub, id, S, w.codec.untied); w.codec.con != nil {
			if err := w.codec.con.projectWeights(); err != nil {
				return nil, err
			}
		}
		if ConstrainOnly {
			none := &compression.LinkCodec{Codec: compression.None{}}
			w.codec.encNext, w.codec.decPrev, w.codec.encPrev, w.codec.decNext, w.codec.evalEnc, w.codec.evalDec = none, none, none, none, none, none
		}
	}
	return w, nil
}

// Run serves the driver until ctx ends, the control link closes or a
// command fails. Link failures and bad frames are not the end: they are
// reported to the driver, which aborts the attempt everywhere and redoes
// it (or hands a dead stage to a spare).
func (w *Worker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.net.runCtx = ctx
	for peer, c := range map[int]transport.Conn{w.net.prevID: w.links.Prev, w.net.nextID: w.links.Next, w.net.tiedID: w.links.Tied} {
		if c != nil && peer >= 0 {
			w.attach(ctx, peer, c)
		}
	}
	for node, c := range w.links.Mesh {
		w.attach(ctx, node, c)
	}
	defer func() {
		for _, l := range w.allLinks() {
			w.detach(l)
		}
	}()
	go w.readCtrl(ctx)
	go w.heartbeats(ctx)
	for {
		var m ctrlMsg
		if w.ctl.pendingAbort != nil {
			m, w.ctl.pendingAbort = *w.ctl.pendingAbort, nil
		} else {
			var ok bool
			select {
			case m, ok = <-w.ctl.ctrlCh:
				if !ok {
					return nil // the driver is gone: nothing left to do
				}
			case <-ctx.Done():
				return nil
			}
		}
		if m.Kind != ctrlAbort && m.Epoch > w.ctl.epoch {
			w.ctl.epoch = m.Epoch
		}
		op, done := w.beginOp(ctx, m.Epoch)
		reply, err := w.serve(op, m)
		aborted := op.Err() != nil
		done()
		if err != nil {
			var lf *linkFailure
			var rf *rejectedFrame
			switch {
			case aborted && ctx.Err() == nil:
				continue // aborted: the abort itself comes next
			case errors.As(err, &lf):
				reply = ctrlMsg{Kind: ctrlLinkDown, Peer: lf.peer, Err: fmt.Sprintf("stage %d: %v", w.id, err)}
			case errors.As(err, &rf):
				reply = ctrlMsg{Kind: ctrlReject, Peer: rf.peer, Err: fmt.Sprintf("stage %d: %v", w.id, err)}
			default:
				return w.fail(ctx, err)
			}
		}
		if reply.Kind == ctrlUnknown {
			continue // the async stream sent its own replies
		}
		if err := w.sendCtrl(ctx, reply); err != nil {
			return err
		}
		if w.leaving {
			return nil // dropped from the swarm: this peer's part is over
		}
	}
}

// serve carries out one command.
func (w *Worker) serve(ctx context.Context, m ctrlMsg) (ctrlMsg, error) {
	switch m.Kind {
	case ctrlStep:
		if w.asy != nil {
			return w.runAsync(ctx, m)
		}
		return w.step(ctx, m)
	case ctrlEval:
		if w.asy != nil {
			return w.asyncEval(ctx, m)
		}
		return w.eval(ctx, m)
	case ctrlState:
		if w.asy != nil {
			return w.asyncState(m)
		}
		step, ts := w.opt.State()
		all := append(w.st.StateDict(), ts...)
		if w.codec.tc != nil {
			all = append(all, w.codec.tc.tensors(w.id)...)
		}
		return w.stateReply(m, step, encodeTensors(all)), nil
	case ctrlRestore:
		if w.asy != nil {
			return w.asyncRestore(m)
		}
		return w.restore(m)
	case ctrlAbort:
		w.ctl.epoch = m.Epoch
		if err := w.reset(); err != nil {
			return ctrlMsg{}, err
		}
		return ctrlMsg{Kind: ctrlAborted}, nil
	case ctrlRelink:
		return w.relinkTo(ctx, m)
	case ctrlFault:
		f := w.net.faults[m.Peer]
		if f == nil {
			return ctrlMsg{}, fmt.Errorf("fault %q on a link to stage %d, which this stage does not have", m.Fault, m.Peer)
		}
		f.apply(m.Fault, time.Duration(m.Duration*float64(time.Second)), m.Mbps, m.Frames)
		return ctrlMsg{Kind: ctrlOK}, nil
	case ctrlError:
		return ctrlMsg{}, fmt.Errorf("control link: %s", m.Err)
	case ctrlSyncServe:
		return w.syncServe(ctx, m)
	case ctrlSyncFetch:
		return w.syncFetch(m)
	case ctrlSyncStop:
		delete(w.replayTo, m.Peer)
		return ctrlMsg{Kind: ctrlOK}, nil
	case ctrlAdmit:
		return w.admit(ctx, m)
	case ctrlLeave:
		w.leaving = true
		return ctrlMsg{Kind: ctrlOK}, nil
	case ctrlLinkTo:
		return w.linkToJoiner(ctx, m)
	case ctrlLie:
		return w.setLie(m)
	}
	return ctrlMsg{}, fmt.Errorf("unexpected control message %q", m.Kind)
}

// relinkTo replaces the link to stage m.Peer with a new connection to the
// peer that now runs it, and returns once the link carries traffic again
// (a heartbeat from the other end), or fails after the link timeout.
func (w *Worker) relinkTo(ctx context.Context, m ctrlMsg) (ctrlMsg, error) {
	if m.Peer < 0 || (m.Peer != w.net.prevID && m.Peer != w.net.nextID && m.Peer != w.net.tiedID) {
		return ctrlMsg{}, fmt.Errorf("relink: stage %d is not linked to stage %d", w.id, m.Peer)
	}
	l := w.linkTo(m.Peer)
	if l == nil && w.net.relink == nil {
		return ctrlMsg{}, fmt.Errorf("relink: no link to stage %d here", m.Peer)
	}
	// Links that cannot break by themselves (relink == nil: in-process
	// pipes, loopback TCP) are kept; injected faults sit above them. A
	// link this stage never had (its neighbour was vacant when it was set
	// up) is made now.
	if w.net.relink != nil {
		c, err := w.net.relink(ctx, m.Peer, m.Peers)
		if err != nil {
			return ctrlMsg{}, &linkFailure{peer: m.Peer, err: fmt.Errorf("re-establish: %w", err)}
		}
		if l != nil {
			w.detach(l)
		}
		l = w.attach(w.net.runCtx, m.Peer, c)
	}
	t0 := time.Now()
	l.out <- wire.Append(nil, wire.Header{Type: wire.TypeHeartbeat, Stage: uint16(w.id)}, nil)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Unix(0, l.heard.Load()).Before(t0) {
		if time.Since(t0) > w.net.linkTimeout {
			return ctrlMsg{}, &linkFailure{peer: m.Peer, silent: time.Since(t0)}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctrlMsg{}, ctx.Err()
		}
	}
	return ctrlMsg{Kind: ctrlOK}, nil
}

func (w *Worker) fail(ctx context.Context, err error) error {
	err = fmt.Errorf("stage %d: %w", w.id, err)
	w.sendCtrl(ctx, ctrlMsg{Kind: ctrlError, Err: err.Error()})
	return err
}

func (w *Worker) sendCtrl(ctx context.Context, m ctrlMsg) error {
	m.Stage = w.id
	if m.Epoch == 0 {
		m.Epoch = w.ctl.epoch
	}
	b, err := encodeCtrl(m)
	if err != nil {
		return err
	}
	w.ctl.ctrlMu.Lock()
	defer w.ctl.ctrlMu.Unlock()
	return sendControl(ctx, w.links.Ctrl, b, w.id)
}

// recvCtrl waits for the driver's next command, which must be want.
func (w *Worker) recvCtrl(ctx context.Context, want ctrlKind) (ctrlMsg, error) {
	select {
	case m, ok := <-w.ctl.ctrlCh:
		if !ok {
			return ctrlMsg{}, errors.New("control link closed")
		}
		if m.Kind == ctrlAbort {
			w.ctl.pendingAbort = &m
			return ctrlMsg{}, context.Canceled
		}
		if m.Kind != want {
			return ctrlMsg{}, fmt.Errorf("control: got %q, want %q", m.Kind, want)
		}
		return m, nil
	case <-ctx.Done():
		return ctrlMsg{}, ctx.Err()
	}
}

func (w *Worker) buf() []float32 {
	if n := len(w.rx.free); n > 0 {
		b := w.rx.free[n-1]
		w.rx.free = w.rx.free[:n-1]
		return b
	}
	return make([]float32, w.B*w.T*w.C)
}

func (w *Worker) release(b []float32) { w.rx.free = append(w.rx.free, b[:cap(b)]) }

// send encodes x (rows×C) with enc into a frame and queues it on the link
// to stage peer.
func (w *Worker) send(peer int, enc *compression.LinkCodec, typ wire.Type, step, micro int, x []float32, tokens []int32, rows int) (int, error) {
	fb := w.rate.gradRate // activations go to the stage whose gradients we measured
	if typ == wire.TypeGradient {
		fb = w.rate.actRate
	}
	p := binary.LittleEndian.AppendUint64(w.encBuf[:0], uint64(time.Now().UnixNano()))
	p = binary.LittleEndian.AppendUint32(p, math.Float32bits(fb))
	var flags wire.Flags
	var err error
	var lz4 bool
	id := compression.IDSubspaceTC
	if w.codec.tc != nil {
		// tokens are the rows' input ids forward, their target ids backward.
		e := w.codec.tc.encoderFor(typ, step)
		if p, err = e.Encode(p, x, tokens, rows, w.C); err == nil {
			if s, moved := w.codec.tc.stepMoved(e); moved {
				dir := "forward"
				if typ == wire.TypeGradient {
					dir = "backward"
				}
				w.stats.Events = append(w.stats.Events, metrics.Event{Type: "event", Kind: "codec_step", Step: step + 1, WallSeconds: time.Since(w.t0).Seconds(),
					Detail: map[string]any{"stage": w.id, "direction": dir, "step": s, "target_bytes_per_token": w.codec.tc.target}})
			}
		}
	} else if tc, ok := enc.Codec.(compression.TokenCodec); ok && typ == wire.TypeActivation {
		// The forward path of the subspace codec carries the token ids.
		id = enc.Codec.ID()
		p, err = tc.EncodeWithTokens(p, x, tokens, rows, w.C)
	} else {
		id = enc.Codec.ID()
		p, lz4, err = enc.Encode(p, x, rows, w.C)
	}
	if err != nil {
		return 0, fmt.Errorf("encode %v: %w", typ, err)
	}
	if lz4 {
		flags |= wire.FlagLZ4
	}
	w.encBuf = p
	frame := wire.Append(nil, wire.Header{Type: typ, Codec: uint8(id), Flags: flags, Stage: uint16(w.id), Step: frameStep(w.ctl.epoch, step), Micro: uint32(micro)}, p)
	l := w.linkTo(peer)
	if l == nil {
		return 0, fmt.Errorf("no link to stage %d", peer)
	}
	w.vf.keep(typ, step, micro, frame)
	l.out <- frame
	return len(frame), nil
}

// decode turns a tensor frame's payload back into floats.
func (w *Worker) decode(dec *compression.LinkCodec, m inMsg, dst []float32, toks []int32, rows int) (time.Time, error) {
	if len(m.payload) < stampSize {
		return time.Time{}, fmt.Errorf("%v frame of step %d: payload too short", m.h.Type, m.h.Step)
	}
	id := compression.IDSubspaceTC
	if w.codec.tc == nil {
		id = dec.Codec.ID()
	}
	if m.h.Codec != uint8(id) {
		return time.Time{}, fmt.Errorf("%v frame of step %d: codec %d, this run uses %v", m.h.Type, m.h.Step, m.h.Codec, id)
	}
	sent := time.Unix(0, int64(binary.LittleEndian.Uint64(m.payload)))
	if w.codec.tc != nil {
		if m.h.Flags != 0 {
			return sent, fmt.Errorf("%v frame of step %d: flags %v on a subspace-tc payload", m.h.Type, m.h.Step, m.h.Flags)
		}
		// toks: filled from the payload where the sender sent ids, else
		// the receiver's own copy (the batch's tokens or targets).
		if err := w.codec.tc.decoderFor(m).Decode(dst[:rows*w.C], toks[:rows], m.payload[stampSize:], rows, w.C); err != nil {
			return sent, err
		}
	} else if tc, ok := dec.Codec.(compression.TokenCodec); ok && m.h.Type == wire.TypeActivation {
		if m.h.Flags != 0 {
			return sent, fmt.Errorf("activation frame of step %d: flags %v on a subspace payload", m.h.Step, m.h.Flags)
		}
		if err := tc.DecodeWithTokens(dst[:rows*w.C], toks[:rows], m.payload[stampSize:], rows, w.C); err != nil {
			return sent, err
		}
	} else if err := dec.Decode(dst[:rows*w.C], m.payload[stampSize:], m.h.Flags&wire.FlagLZ4 != 0, rows, w.C); err != nil {
		return sent, err
	}
	for _, v := range dst[:rows*w.C] {
		if !(v >= -maxAbsValue && v <= maxAbsValue) { // NaN fails both
			return sent, fmt.Errorf("%v frame of step %d micro %d holds %v (non-finite or beyond ±%g)", m.h.Type, m.h.Step, m.h.Micro, v, maxAbsValue)
		}
	}
	return sent, nil
}

func (w *Worker) span(kind string, micro int, start time.Time) {
	now := time.Now()
	w.stats.Spans = append(w.stats.Spans, spanRec{Kind: kind, Micro: micro, Start: start.Sub(w.t0).Seconds(), End: now.Sub(w.t0).Seconds()})
}

// take waits for one message from the links and files it. A bad frame is
// a rejectedFrame; a duplicate is dropped.
func (w *Worker) take(ctx context.Context) error {
	w0 := time.Now()
	m, err := w.nextMsg(ctx)
	if err != nil {
		return err
	}
	reject := func(err error) error { return &rejectedFrame{peer: m.from.peer, err: err} }
	_, step := splitStep(m.h.Step)
	var dst []float32
	var dec *compression.LinkCodec
	rows := w.B * w.T
	key := [2]int{step, int(m.h.Micro)}
	// Within one attempt a frame of a step already finished can only be
	// a late duplicate; seen catches duplicates within this step.
	k3 := [3]int{int(m.h.Type), step, int(m.h.Micro)}
	if step < w.sm.CurrentStep()+w.base || w.net.seen[k3] {
		return nil
	}
	w.net.seen[k3] = true
	if m.h.Micro >= uint32(w.M) || step > w.sm.CurrentStep()+w.base {
		return reject(fmt.Errorf("%v frame for step %d micro %d, outside this step", m.h.Type, step, m.h.Micro))
	}
	if err := w.fromRoute(m); err != nil {
		return reject(err)
	}
	switch m.h.Type {
	case wire.TypeActivation:
		dst, dec = w.buf(), w.codec.decPrev
	case wire.TypeGradient:
		dst, dec = w.buf(), w.codec.decNext
	case wire.TypeTiedGrad:
		if w.codec.untied {
			if len(m.payload) != stampSize {
				return reject(fmt.Errorf("tied gradient of step %d: %d bytes, but the head is untied: want only the %d-byte stamp", step, len(m.payload), stampSize))
			}
			w.netWait(w0, m)
			return w.sm.Step(scheduler.EmbeddingGradArrived(step - w.base))
		}
		tw := w.st.TiedWeight()
		if w.rx.tiedIn == nil {
			n := len(tw.Data)
			if w.codec.con != nil {
				n = n / w.C * w.codec.con.basis.K
			}
			w.rx.tiedIn = make([]float32, n)
		}
		if tc := w.codec.tied; tc != nil {
			if m.h.Codec != uint8(tc.Codec.ID()) || len(m.payload) < stampSize {
				return reject(fmt.Errorf("tied gradient of step %d: codec %d, %d bytes; this run codes it as %v", step, m.h.Codec, len(m.payload), tc.Codec.ID()))
			}
			if err := tc.Decode(w.rx.tiedIn, m.payload[stampSize:], false, w.V, len(w.rx.tiedIn)/w.V); err != nil {
				return reject(fmt.Errorf("tied gradient of step %d: %w", step, err))
			}
			for _, v := range w.rx.tiedIn {
				if !(v >= -maxAbsValue && v <= maxAbsValue) {
					return reject(fmt.Errorf("tied gradient of step %d holds %v", step, v))
				}
			}
			w.netWait(w0, m)
			return w.sm.Step(scheduler.EmbeddingGradArrived(step - w.base))
		}
		if len(m.payload) != stampSize+4*len(w.rx.tiedIn) {
			return reject(fmt.Errorf("tied gradient of step %d: %d bytes, want %d", step, len(m.payload), stampSize+4*len(w.rx.tiedIn)))
		}
		for i := range w.rx.tiedIn {
			v := math.Float32frombits(binary.LittleEndian.Uint32(m.payload[stampSize+4*i:]))
			if !(v >= -maxAbsValue && v <= maxAbsValue) {
				return reject(fmt.Errorf("tied gradient of step %d holds %v", step, v))
			}
			w.rx.tiedIn[i] = v
		}
		w.netWait(w0, m)
		return w.sm.Step(scheduler.EmbeddingGradArrived(step - w.base))
	default:
		return reject(fmt.Errorf("unexpected %v frame on a stage link", m.h.Type))
	}
	var toks []int32
	if m.h.Type == wire.TypeActivation || w.codec.tc != nil {
		toks = make([]int32, rows)
		// A subspace-tc payload into the last stage (forward) or the first
		// (backward) carries no ids: the receiver has them.
		own := w.rx.batchTok
		if m.h.Type == wire.TypeGradient {
			own = w.rx.batchTgt
		}
		if w.codec.tc != nil && len(own) > 0 {
			copy(toks, own[int(m.h.Micro)*rows:])
		}
	}
	if _, err := w.decode(dec, m, dst, toks, rows); err != nil {
		w.release(dst)
		return reject(err)
	}
	w.netWait(w0, m)
	w.observe(m)
	w.vf.received(m)
	if m.h.Type == wire.TypeActivation {
		w.rx.acts[key] = dst
		w.rx.toks[key] = toks
		return w.sm.Step(scheduler.ActivationArrived(step-w.base, int(m.h.Micro)))
	}
	w.rx.grads[key] = dst
	if w.codec.tc != nil {
		w.rx.tgts[key] = toks
	}
	return w.sm.Step(scheduler.GradientArrived(step-w.base, int(m.h.Micro)))
}

// observe measures the throughput of a received tensor frame and feeds the
// sender's feedback on our own sending to the auto-rank controller.
func (w *Worker) observe(m inMsg) {
	sent := time.Unix(0, int64(binary.LittleEndian.Uint64(m.payload)))
	fb := float64(math.Float32frombits(binary.LittleEndian.Uint32(m.payload[8:])))
	rate, link := &w.rate.actRate, m.from.conn
	auto, enc, dir := w.codec.autoPrev, w.codec.encPrev, "backward"
	if m.h.Type == wire.TypeGradient {
		rate = &w.rate.gradRate
		auto, enc, dir = w.codec.autoNext, w.codec.encNext, "forward"
	}
	// Transfer time = transit less the one-way latency (half the link's
	// round trip): serialization plus any queueing behind earlier
	// messages. A late delivery only makes it longer, so the estimate errs
	// towards a slower link, never a faster one.
	transfer := m.at.Sub(sent) - link.Stats().RTT/2
	transfer = max(transfer, 50*time.Microsecond) // clock granularity
	*rate = float32(float64(len(m.payload)+wire.HeaderSize) / transfer.Seconds())
	// fb is how fast our frames in the other direction reached this
	// peer: the activations we send next (on a gradient frame) or the
	// gradients we send back (on an activation frame).
	if auto == nil || fb <= 0 || w.rate.computePerMicro <= 0 {
		return
	}
	setting, ev := auto.Observe(compression.Observation{BytesPerSecond: fb, ComputeSeconds: w.rate.computePerMicro, Rows: w.B * w.T, Cols: w.C})
	if ev == nil {
		return
	}
	if lr, ok := enc.Codec.(*compression.LowRank); ok {
		lr.Apply(setting)
	}
	d := ev.Detail()
	d["stage"], d["direction"] = w.id, dir
	w.stats.Events = append(w.stats.Events, metrics.Event{Type: "event", Kind: "rank_change", Step: int(m.h.Step&(1<<epochShift-1)) + 1, WallSeconds: time.Since(w.t0).Seconds(), Detail: d})
}

// netWait counts the part of a wait that began at w0 during which the
// message had already left its sender.
func (w *Worker) netWait(w0 time.Time, m inMsg) {
	if len(m.payload) < stampSize {
		return
	}
	sent := time.Unix(0, int64(binary.LittleEndian.Uint64(m.payload)))
	if sent.Before(w0) {
		sent = w0
	}
	if d := m.at.Sub(sent).Seconds(); d > 0 {
		w.stats.NetWait += d
	}
}

func (w *Worker) step(ctx context.Context, cmd ctrlMsg) (ctrlMsg, error) {
	start := time.Now()
	w.t0 = time.Unix(0, cmd.T0)
	w.stats = workerStats{}
	if !w.started {
		w.base, w.started = cmd.Step, true
	}
	if got := w.sm.CurrentStep() + w.base; got != cmd.Step {
		return ctrlMsg{}, fmt.Errorf("driver asked for step %d, stage is at %d", cmd.Step, got)
	}
	N := w.B * w.T
	if (w.first || w.last) && len(cmd.blob) != w.M*N*2*w.idw {
		return ctrlMsg{}, fmt.Errorf("step %d: batch blob has %d bytes, want %d", cmd.Step, len(cmd.blob), w.M*N*2*w.idw)
	}
	tokens := make([]int32, w.M*N)
	targets := make([]int32, w.M*N)
	if len(cmd.blob) > 0 {
		if err := getIDs(tokens, cmd.blob, w.idw, w.V); err != nil {
			return ctrlMsg{}, fmt.Errorf("step %d: batch: %w", cmd.Step, err)
		}
		if err := getIDs(targets, cmd.blob[w.M*N*w.idw:], w.idw, w.V); err != nil {
			return ctrlMsg{}, fmt.Errorf("step %d: batch: %w", cmd.Step, err)
		}
	}
	w.rx.batchTok, w.rx.batchTgt = nil, nil
	if len(cmd.blob) > 0 {
		w.rx.batchTok, w.rx.batchTgt = tokens, targets
	}
	if w.rep != nil {
		if err := w.routeStep(cmd); err != nil {
			return ctrlMsg{}, fmt.Errorf("step %d: %w", cmd.Step, err)
		}
		w.vf.begin(w.M)
	}
	if w.codec.tc != nil {
		if err := w.codec.tc.begin(cmd.Step); err != nil {
			return ctrlMsg{}, err
		}
		if n := w.codec.tc.note; n != nil {
			w.stats.Events, w.codec.tc.note = append(w.stats.Events, *n), nil
		}
	}
	var loss float64
	for {
		a := w.sm.Next()
		step := a.Step + w.base
		t := time.Now()
		switch a.Kind {
		case scheduler.ActionWait:
			if err := w.take(ctx); err != nil {
				return ctrlMsg{}, fmt.Errorf("step %d: waiting for %v of micro-batch %d: %w", step, a.WaitFor, a.Micro, err)
			}
			w.stats.Wait += time.Since(t).Seconds()
			w.span("recv_wait", a.Micro, t)
			continue
		case scheduler.ActionDone:
			clear(w.net.seen)
			if err := w.sm.Advance(); err != nil {
				return ctrlMsg{}, err
			}
			w.stats.Wall = time.Since(start).Seconds()
			if l := w.linkTo(w.statsPeer()); l != nil {
				ls := l.conn.Stats()
				w.stats.Candidate, w.stats.RTTMs = ls.Candidate, float64(ls.RTT)/1e6
			}
			if w.ownProcess {
				w.stats.PeakRSS = PeakRSS()
			}
			st := w.stats
			return ctrlMsg{Kind: ctrlDone, Step: cmd.Step, Stats: &st}, nil
		case scheduler.ActionForward:
			var in []float32
			key := [2]int{step, a.Micro}
			tok := tokens[a.Micro*N : (a.Micro+1)*N]
			if !w.first {
				in, tok = w.rx.acts[key], w.rx.toks[key]
				delete(w.rx.acts, key)
				delete(w.rx.toks, key)
			}
			if w.last {
				v, err := w.st.ForwardLoss(a.Slot, w.B, w.T, tok, in, targets[a.Micro*N:(a.Micro+1)*N])
				if err != nil {
					return ctrlMsg{}, err
				}
				loss += float64(v)
			} else {
				out, err := w.st.Forward(a.Slot, w.B, w.T, tok, in)
				if err != nil {
					return ctrlMsg{}, err
				}
				if err := w.sendActivation(step, a.Micro, w.perturb(step, a.Micro, out), tok, N); err != nil {
					return ctrlMsg{}, err
				}
			}
			if in != nil {
				w.release(in)
			}
			w.span("forward", a.Micro, t)
			w.rate.fwdSecs = time.Since(t).Seconds()
		case scheduler.ActionBackward:
			key := [2]int{step, a.Micro}
			var dout []float32
			if !w.last {
				dout = w.rx.grads[key]
				delete(w.rx.grads, key)
			}
			din, err := w.st.Backward(a.Slot, dout, 1/float32(w.microTotal()))
			if err != nil {
				return ctrlMsg{}, err
			}
			if !w.first {
				var tgt []int32 // the rows' target ids, for subspace-tc
				if w.codec.tc != nil {
					if w.last {
						tgt = targets[a.Micro*N : (a.Micro+1)*N]
					} else {
						tgt = w.rx.tgts[key]
						delete(w.rx.tgts, key)
					}
				}
				if err := w.sendGradient(step, a.Micro, din, tgt, N); err != nil {
					return ctrlMsg{}, err
				}
			}
			if dout != nil {
				w.release(dout)
			}
			for _, msg := range w.sm.Sends(a) {
				if msg.Kind == scheduler.MessageEmbeddingGrad {
					if err := w.sendTied(step); err != nil {
						return ctrlMsg{}, err
					}
				}
			}
			w.span("backward", a.Micro, t)
			w.rate.bwdSecs = time.Since(t).Seconds()
			w.rate.computePerMicro = w.rate.fwdSecs + w.rate.bwdSecs
		case scheduler.ActionOptimizerStep:
			waited, err := w.optimize(ctx, cmd, loss)
			if err != nil {
				return ctrlMsg{}, err
			}
			// The global-norm barrier is waiting, not compute.
			w.stats.Wait += waited.Seconds()
			w.stats.Busy -= waited.Seconds()
		default:
			return ctrlMsg{}, fmt.Errorf("scheduler asked for %v", a)
		}
		w.stats.Busy += time.Since(t).Seconds()
		if err := w.sm.Step(scheduler.Completed(a)); err != nil {
			return ctrlMsg{}, err
		}
	}
}

// sendActivation sends a micro-batch's output of N rows to the next stage
// and counts it in the step's statistics.
func (w *Worker) sendActivation(step, micro int, out []float32, tok []int32, N int) error {
	n, err := w.send(w.nextOf(micro), w.codec.encNext, wire.TypeActivation, step, micro, out, tok, N)
	if err != nil {
		return err
	}
	w.stats.SentFwdBytes += int64(n)
	w.stats.RawFwdBytes += int64(4 * N * w.C)
	w.stats.SentMessages++
	return nil
}

// sendGradient sends the gradient of a micro-batch's input (N rows) to
// the previous stage and counts it; tgt are the rows' target ids where the
// codec wants them (subspace-tc), else nil.
func (w *Worker) sendGradient(step, micro int, din []float32, tgt []int32, N int) error {
	n, err := w.send(w.prevOf(micro), w.codec.encPrev, wire.TypeGradient, step, micro, din, tgt, N)
	if err != nil {
		return err
	}
	w.stats.SentBwdBytes += int64(n)
	w.stats.RawBwdBytes += int64(4 * N * w.C)
	w.stats.SentMessages++
	return nil
}

// sendTied sends this stage's tied-embedding gradient: raw fp32 (the exact
// sum), or coded by compression.tied_precision, and then this stage's own
// half is replaced by its decoded value, so that both ends add the same two
// halves and their copies of the embedding stay identical.
func (w *Worker) sendTied(step int) error {
	var g []float32
	switch {
	case w.codec.untied:
		// the ends only tell each other their step is done
	case w.codec.con == nil:
		g = w.st.TiedWeight().Grad
	default:
		// Under the subspace constraint only the tied gradient's part in
		// span(U) matters (it is projected before the optimizer): send
		// its k coefficients per row instead of d values, d/k less.
		w.codec.tiedOwn = w.codec.con.coeffs(w.st.TiedWeight().Grad, w.codec.tiedOwn)
		g = w.codec.tiedOwn
	}
	p := make([]byte, stampSize, stampSize+4*len(g))
	binary.LittleEndian.PutUint64(p, uint64(time.Now().UnixNano()))
	binary.LittleEndian.PutUint32(p[8:], 0)
	codec := uint8(compression.IDNone)
	if tc := w.codec.tied; tc != nil && len(g) > 0 {
		rows := w.V
		var err error
		var lz4 bool
		if p, lz4, err = tc.Encode(p, g, rows, len(g)/rows); err != nil {
			return fmt.Errorf("step %d: tied-embedding gradient: %w", step, err)
		}
		if lz4 {
			return fmt.Errorf("step %d: tied-embedding gradient: lz4 is not used on it", step)
		}
		if err := tc.Decode(g, p[stampSize:], false, rows, len(g)/rows); err != nil {
			return fmt.Errorf("step %d: tied-embedding gradient: %w", step, err)
		}
		codec = uint8(tc.Codec.ID())
	} else {
		for _, v := range g {
			p = binary.LittleEndian.AppendUint32(p, math.Float32bits(v))
		}
	}
	frame := wire.Append(nil, wire.Header{Type: wire.TypeTiedGrad, Codec: codec, Stage: uint16(w.id), Step: frameStep(w.ctl.epoch, step), Micro: 0}, p)
	for _, to := range w.tiedTo() {
		if l := w.linkTo(to); l != nil {
			l.out <- frame
			w.stats.SentTiedBytes += int64(len(frame))
		}
	}
	return nil
}

// optimize finishes the step's gradients and applies AdamW once the driver
// has the global norm.
func (w *Worker) optimize(ctx context.Context, cmd ctrlMsg, loss float64) (time.Duration, error) {
	t := time.Now()
	if w.rep == nil && w.S > 1 && (w.first || w.last) && !w.codec.untied {
		w.addTied()
	}
	// After the tied sum: each lane's two copies then hold the same
	// value, and the stage's sum keeps them equal (docs/swarm.md).
	if err := w.timedSum(ctx, cmd.Step); err != nil {
		return 0, err
	}
	if err := w.swarmTied(ctx, cmd.Step); err != nil {
		return 0, err
	}
	if w.codec.con != nil {
		if err := w.codec.con.projectGrads(); err != nil {
			return 0, err
		}
	}
	rep := ctrlMsg{Kind: ctrlReport, Step: cmd.Step, SumSq: w.st.GradSumSquares()}
	if w.last {
		rep.Loss = loss / float64(w.microTotal())
	}
	rep.Hashes = w.vf.hashes()
	if err := w.sendCtrl(ctx, rep); err != nil {
		return 0, err
	}
	w.span("optimizer", -1, t)
	t = time.Now()
	ap, err := w.awaitApply(ctx, cmd.Step)
	if err != nil {
		return 0, err
	}
	waited := time.Since(t)
	w.span("sync_wait", -1, t)
	t = time.Now()
	w.replay(cmd.LR, ap.Scale)
	stages.ScaleGrads(w.st.Params(), ap.Scale)
	w.opt.Step(float32(cmd.LR))
	w.st.ZeroGrad()
	if w.codec.con != nil {
		if err := w.codec.con.projectWeights(); err != nil {
			return 0, err
		}
	}
	w.span("optimizer", -1, t)
	return waited, nil
}

// eval runs forward passes of held-out batches through the pipeline.
func (w *Worker) eval(ctx context.Context, cmd ctrlMsg) (ctrlMsg, error) {
	total := 0
	for _, s := range cmd.Shapes {
		total += s[0] * s[1]
	}
	if (w.first || w.last) && len(cmd.blob) != 2*total*w.idw {
		return ctrlMsg{}, fmt.Errorf("eval: blob has %d bytes, want %d", len(cmd.blob), 2*total*w.idw)
	}
	if w.rep != nil {
		if len(cmd.Chains) != w.S || len(cmd.Chains[w.id]) == 0 || (!w.last && len(cmd.Chains[w.id+1]) == 0) {
			return ctrlMsg{}, fmt.Errorf("eval: chains %v for %d stages", cmd.Chains, w.S)
		}
		w.rep.chains = cmd.Chains
	}
	if w.codec.tc != nil {
		if err := w.codec.tc.forEval(); err != nil {
			return ctrlMsg{}, err
		}
	}
	var lossSum float64
	var count int64
	off := 0
	for k, s := range cmd.Shapes {
		B, T := s[0], s[1]
		n := B * T
		if B < 1 || B > w.B || T < 1 || T > w.T {
			return ctrlMsg{}, fmt.Errorf("eval batch %d: shape %dx%d outside %dx%d", k, B, T, w.B, w.T)
		}
		tok := make([]int32, n)
		tgt := make([]int32, n)
		if len(cmd.blob) > 0 {
			if err := getIDs(tok, cmd.blob[off*w.idw:], w.idw, w.V); err != nil {
				return ctrlMsg{}, fmt.Errorf("eval batch %d: %w", k, err)
			}
			if err := getIDs(tgt, cmd.blob[(total+off)*w.idw:], w.idw, w.V); err != nil {
				return ctrlMsg{}, fmt.Errorf("eval batch %d: %w", k, err)
			}
		}
		off += n
		var in []float32
		if !w.first {
			m, err := w.nextEvalMsg(ctx)
			if err != nil {
				return ctrlMsg{}, err
			}
			if _, st := splitStep(m.h.Step); m.h.Type != wire.TypeActivation || st != evalStep || int(m.h.Micro) != k {
				return ctrlMsg{}, &rejectedFrame{peer: m.from.peer, err: fmt.Errorf("eval: got %v frame step %d micro %d, want eval activation %d", m.h.Type, st, m.h.Micro, k)}
			}
			in = w.buf()
			if _, err := w.decode(w.codec.evalDec, m, in, tok, n); err != nil {
				w.release(in)
				return ctrlMsg{}, &rejectedFrame{peer: m.from.peer, err: err}
			}
			in = in[:n*w.C]
		}
		if w.last {
			v, err := w.st.ForwardLoss(w.evalSlot, B, T, tok, in, tgt)
			if err != nil {
				return ctrlMsg{}, err
			}
			lossSum += float64(v) * float64(n)
			count += int64(n)
		} else {
			out, err := w.st.Forward(w.evalSlot, B, T, tok, in)
			if err != nil {
				return ctrlMsg{}, err
			}
			if _, err := w.send(w.evalNext(), w.codec.evalEnc, wire.TypeActivation, evalStep, k, out, tok, n); err != nil {
				return ctrlMsg{}, err
			}
		}
		if in != nil {
			w.release(in)
		}
	}
	return ctrlMsg{Kind: ctrlEvalDone, LossSum: lossSum, Count: count}, nil
}

func (w *Worker) restore(cmd ctrlMsg) (ctrlMsg, error) {
	ts, err := decodeTensors(cmd.blob)
	if err != nil {
		return ctrlMsg{}, err
	}
	st := &stages.State{Model: w.st.Config(), OptimStep: cmd.OptimStep, Tensors: ts}
	// A subspace run's saved weights are already in span(U); projecting
	// them again would change their last bits and break bit-identical
	// resume.
	if err := st.RestoreStage(w.st, w.opt); err != nil {
		return ctrlMsg{}, err
	}
	if w.rep != nil {
		w.rep.codec.reset() // not in the state: every replica starts it afresh (replica_codec.go)
	}
	if w.codec.tc != nil {
		if err := w.codec.tc.restore(ts, w.id); err != nil {
			// Every stage reads the same state, so every end of every link
			// finds the same and resets with its other end.
			w.codec.tc.reset()
			w.codec.tc.note = &metrics.Event{Type: "event", Kind: "codec_reset", Step: cmd.OptimStep,
				Detail: map[string]any{"stage": w.id, "reason": err.Error()}}
		}
	}
	w.started = false
	return ctrlMsg{Kind: ctrlOK}, nil
}

// SetRelink sets how the worker re-establishes its link to a neighbour
// stage when the driver says so (WebRTC: a new ICE session through
// signaling, to the peer that now holds it). Without one, links that cannot
// break by themselves (in-process pipes, loopback TCP) are kept.
func (w *Worker) SetRelink(f func(ctx context.Context, peer int, holders []string) (transport.Conn, error)) {
	w.net.relink = f
}
