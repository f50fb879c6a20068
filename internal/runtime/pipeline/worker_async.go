package pipeline

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/wire"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// The async schedule in the worker (docs/async.md, "What the runtime must
// do"; stages/optim_async_test.go's asyncRef is the same logic in one
// goroutine). The stream of micro-batches never stops between steps, so
// the worker does not run one driver command per step: the first step
// command starts runAsync, which runs the machine to the end of the run and
// takes the driver's later commands as they come (batches and learning
// rates sent ahead, evaluations and state requests), replying ctrlDone for
// step s the moment it applies OptimizerStep{s}.

// asyncRun is a worker's state under the async schedule.
type asyncRun struct {
	m     *scheduler.AsyncMachine
	spec  scheduler.Pipeline
	steps int
	clip  float64 // per-stage clipping norm: grad_clip/√S

	live    [][]float32         // each param's own Data
	free    [][][]float32       // stash buffers not in use (StashBound, allocated once)
	stash   map[int][][]float32 // version → the weights its forwards ran on
	grads   [][][]float32       // [step % GradBuffers][param]
	batches map[int]asyncBatch  // step → what the driver sent for it
	losses  map[int]float64     // last stage: step → sum of its micro-batches' losses
	tiedIn  map[int][]float32   // step → the peer's tied-embedding gradient
	tiedOwn map[int][]float32   // subspace: step → this stage's tied coefficients, as sent
	evalq   []inMsg             // evaluation frames that came while streaming
	// held are the copies of the steps the driver marked (Hold), by step:
	// a stage may apply a later held step before the driver has asked
	// for an earlier one (it sends steps ahead), so one copy is not
	// enough. A copy goes once the driver asks for a later step.
	held  map[int]*asyncHeld
	spare *asyncHeld // a dropped copy's buffers, reused
	begun bool
	since time.Time // the last ctrlDone: a step's stats cover the time since

	// Recovery (docs/async.md, "Recovery"). past keeps, by version, the
	// weights forwards ran on that a coming snapshot's restart will run
	// its first forwards on again (HistoryAt), once neither live nor
	// stashed; snapAt says which steps are snapshots (engine.SnapshotAt).
	// After an abort the stream is abandoned (stale) until a restore
	// gives the state to restart from (restart).
	past    map[int][][]float32
	snapAt  func(k int) bool
	stale   bool
	restart *asyncRestart
}

// asyncBatch is one step's command: its batch (first and last stage), its
// learning rate, and whether to keep a copy of the stage once the step is
// applied.
type asyncBatch struct {
	tokens, targets []int32
	lr              float64
	hold            bool
}

// asyncHeld is the stage as it was right after it applied step: the
// optimizer's iterate (Master, not the look-ahead the forwards run on) and
// its state, copied. Evaluation and checkpoints of step read it, because by
// the time every stage has applied step some have gone on.
type asyncHeld struct {
	step    int
	optStep int
	weights [][]float32
	opt     []stages.Tensor
	// At a snapshot (engine.SnapshotAt(step+1)): the weights the forwards
	// ran on at each version a restart at step+1 needs (HistoryAt), and
	// the live weights (under the Nesterov correction the look-ahead,
	// which the state's iterate does not give back).
	hist map[int][][]float32
	live [][]float32
}

func newAsyncRun(cfg config.Config, spec scheduler.Pipeline, id int, st *stages.Stage) (*asyncRun, error) {
	m, err := scheduler.NewAsyncMachine(spec, id, cfg.Run.Steps)
	if err != nil {
		return nil, fmt.Errorf("stage %d: %w", id, err)
	}
	a := &asyncRun{m: m, spec: spec, steps: cfg.Run.Steps, clip: cfg.Train.GradClip / math.Sqrt(float64(spec.Stages)),
		past: map[int][][]float32{}, snapAt: func(k int) bool { return engine.SnapshotAt(cfg, k) }}
	ps := st.Params()
	var own [][]float32
	for _, p := range ps {
		a.live = append(a.live, p.Data)
		own = append(own, p.Grad)
	}
	a.grads = append(a.grads, own)
	for range m.GradBuffers() - 1 {
		a.grads = append(a.grads, allocLike(ps, true))
	}
	for range m.StashBound() {
		a.free = append(a.free, allocLike(ps, false))
	}
	a.reset(m)
	return a, nil
}

func allocLike(ps []*stages.Param, grad bool) [][]float32 {
	var out [][]float32
	for _, p := range ps {
		n := len(p.Data)
		if grad {
			n = len(p.Grad)
		}
		out = append(out, make([]float32, n))
	}
	return out
}

// reset empties the pipe: m starts at its First step.
func (a *asyncRun) reset(m *scheduler.AsyncMachine) {
	a.m = m
	for v, w := range a.stash {
		a.free = append(a.free, w)
		delete(a.stash, v)
	}
	for v, w := range a.past {
		a.free = append(a.free, w)
		delete(a.past, v)
	}
	for _, g := range a.grads {
		for _, x := range g {
			clear(x)
		}
	}
	a.stash, a.batches, a.losses = map[int][][]float32{}, map[int]asyncBatch{}, map[int]float64{}
	a.tiedIn, a.tiedOwn, a.evalq, a.held, a.spare = map[int][]float32{}, map[int][]float32{}, nil, map[int]*asyncHeld{}, nil
}

// setGrads points every param's Grad at step's buffer.
func (a *asyncRun) setGrads(st *stages.Stage, step int) {
	buf := a.grads[step%len(a.grads)]
	for k, p := range st.Params() {
		p.Grad = buf[k]
	}
}

// useWeights points every param's Data at w (nil: the live weights).
func (a *asyncRun) useWeights(st *stages.Stage, w [][]float32) {
	if w == nil {
		w = a.live
	}
	for k, p := range st.Params() {
		p.Data = w[k]
	}
}

// runAsync runs the stream from the step command first to the end of the
// run. It sends its own replies; the one it returns is empty.
func (w *Worker) runAsync(ctx context.Context, first ctrlMsg) (ctrlMsg, error) {
	a := w.asy
	if !a.begun {
		switch r := a.restart; {
		case r != nil:
			// Restored: a resumed run (the origin is the checkpoint's
			// step: the pipe refills from scratch) or a rollback to a
			// snapshot (the stream goes on as if it never stopped, its
			// refill on the older versions the snapshot kept).
			m, err := scheduler.NewAsyncMachineAt(a.spec, w.id, r.origin, first.Step, a.steps)
			if err != nil {
				return ctrlMsg{}, err
			}
			a.reset(m)
			for _, v := range m.History() {
				h, ok := r.hist[v]
				if !ok {
					return ctrlMsg{}, fmt.Errorf("async: the restart at step %d runs its first forwards on weight version %d, which the restored state does not hold (restore the snapshot of that step, or resume a checkpoint)", first.Step+1, v)
				}
				a.stash[v] = h
				delete(r.hist, v)
			}
			for _, h := range r.hist {
				a.free = append(a.free, h)
			}
			a.restart, a.stale = nil, false
		case a.stale:
			return ctrlMsg{}, errors.New("async: a step command after an abort without a restore: the stream cannot go on from the middle of its steps (a bug: recovery restores a snapshot)")
		case first.Step != a.m.First():
			return ctrlMsg{}, fmt.Errorf("async: the stream starts at step %d, but the driver began with step %d (a bug: restore first)", a.m.First()+1, first.Step+1)
		}
		a.begun = true
		w.t0 = time.Unix(0, first.T0)
		w.stats = workerStats{}
		a.since = time.Now()
	}
	if err := w.addBatch(first); err != nil {
		return ctrlMsg{}, err
	}
	N := w.B * w.T
	for {
		if err := w.drainCtrl(ctx); err != nil {
			return ctrlMsg{}, err
		}
		act := a.m.Next()
		t := time.Now()
		b, have := a.batches[act.Step]
		switch act.Kind {
		case scheduler.ActionDone:
			return ctrlMsg{}, nil
		case scheduler.ActionWait:
			if err := w.awaitAsync(ctx); err != nil {
				return ctrlMsg{}, fmt.Errorf("step %d: waiting for %v of micro-batch %d: %w", act.Step, act.WaitFor, act.Micro, err)
			}
			w.stats.Wait += time.Since(t).Seconds()
			w.span("recv_wait", act.Micro, t)
			continue
		case scheduler.ActionForward:
			if (w.first || w.last) && !have {
				if err := w.awaitAsync(ctx); err != nil { // the driver's batch
					return ctrlMsg{}, err
				}
				w.stats.Wait += time.Since(t).Seconds()
				continue
			}
			key := [2]int{act.Step, act.Micro}
			var in []float32
			var tok []int32
			if w.first {
				tok = b.tokens[act.Micro*N : (act.Micro+1)*N]
			} else {
				in, tok = w.rx.acts[key], w.rx.toks[key]
				delete(w.rx.acts, key)
				delete(w.rx.toks, key)
				if tok == nil {
					tok = make([]int32, N)
				}
			}
			if act.Version != a.m.Version() {
				// A restart's refill: the forward runs on the older version
				// the uninterrupted stream gave it.
				sw, ok := a.stash[act.Version]
				if !ok {
					return ctrlMsg{}, fmt.Errorf("forward of step %d micro %d needs weight version %d, which is not held (a bug)", act.Step, act.Micro, act.Version)
				}
				a.useWeights(w.st, sw)
			}
			if w.last {
				v, err := w.st.ForwardLoss(act.Slot, w.B, w.T, tok, in, b.targets[act.Micro*N:(act.Micro+1)*N])
				a.useWeights(w.st, nil)
				if err != nil {
					return ctrlMsg{}, err
				}
				a.losses[act.Step] += float64(v)
			} else {
				out, err := w.st.Forward(act.Slot, w.B, w.T, tok, in)
				a.useWeights(w.st, nil)
				if err != nil {
					return ctrlMsg{}, err
				}
				if err := w.sendActivation(act.Step, act.Micro, out, tok, N); err != nil {
					return ctrlMsg{}, err
				}
			}
			if in != nil {
				w.release(in)
			}
			w.vspan("forward", act, t)
		case scheduler.ActionBackward:
			key := [2]int{act.Step, act.Micro}
			var dout []float32
			if !w.last {
				dout = w.rx.grads[key]
				delete(w.rx.grads, key)
			}
			a.setGrads(w.st, act.Step)
			if act.Version != a.m.Version() {
				// Weight stashing: the backward runs on the weights its
				// forward ran on.
				sw, ok := a.stash[act.Version]
				if !ok {
					return ctrlMsg{}, fmt.Errorf("backward of step %d micro %d needs weight version %d, which is not stashed (a bug)", act.Step, act.Micro, act.Version)
				}
				a.useWeights(w.st, sw)
			}
			din, err := w.st.Backward(act.Slot, dout, 1/float32(w.M))
			a.useWeights(w.st, nil)
			if err != nil {
				return ctrlMsg{}, err
			}
			if !w.first {
				if err := w.sendGradient(act.Step, act.Micro, din, nil, N); err != nil {
					return ctrlMsg{}, err
				}
			}
			if dout != nil {
				w.release(dout)
			}
			for _, msg := range a.m.Sends(act) {
				if msg.Kind == scheduler.MessageEmbeddingGrad {
					if err := w.sendTied(act.Step); err != nil { // step's buffer: Grad points at it
						return ctrlMsg{}, err
					}
					if w.codec.con != nil {
						a.tiedOwn[act.Step] = append([]float32(nil), w.codec.tiedOwn...)
					}
				}
			}
			w.vspan("backward", act, t)
		case scheduler.ActionStash:
			// StashBound buffers were allocated up front; more are made
			// only where a snapshot's versions took some.
			buf := a.buffer(w.st.Params())
			for k, p := range w.st.Params() {
				copy(buf[k], p.Data)
			}
			a.stash[act.Version] = buf
			w.vspan("stash", act, t)
		case scheduler.ActionDropVersion:
			if a.keepsPast(act.Version, a.m.Version()) {
				a.past[act.Version] = a.stash[act.Version]
			} else {
				a.free = append(a.free, a.stash[act.Version])
			}
			delete(a.stash, act.Version)
			w.vspan("drop", act, t)
		case scheduler.ActionOptimizerStep:
			if !have { // the learning rate comes with the step's command
				if err := w.awaitAsync(ctx); err != nil {
					return ctrlMsg{}, err
				}
				w.stats.Wait += time.Since(t).Seconds()
				continue
			}
			if v := a.m.Version(); a.keepsPast(v, v) && a.stash[v] == nil {
				// The version this step overwrites: a coming snapshot's
				// restart runs forwards on it again.
				buf := a.buffer(w.st.Params())
				for k, p := range w.st.Params() {
					copy(buf[k], p.Data)
				}
				a.past[v] = buf
			}
			if err := w.asyncOptimize(ctx, act, b); err != nil {
				return ctrlMsg{}, fmt.Errorf("step %d: %w", act.Step, err)
			}
		default:
			return ctrlMsg{}, fmt.Errorf("async machine asked for %v", act)
		}
		if act.Kind != scheduler.ActionOptimizerStep {
			w.stats.Busy += time.Since(t).Seconds()
		}
		if err := a.m.Step(scheduler.Completed(act)); err != nil {
			return ctrlMsg{}, err
		}
	}
}

// vspan records a span of act with the step its micro-batch belongs to and
// the weight version it ran on (or stashed, or dropped): the web view
// shows them, and they let a test check that each backward used its
// forward's version.
func (w *Worker) vspan(kind string, act scheduler.Action, start time.Time) {
	v := act.Version
	w.stats.Spans = append(w.stats.Spans, spanRec{Kind: kind, Micro: act.Micro, Start: start.Sub(w.t0).Seconds(), End: time.Since(w.t0).Seconds(), Of: act.Step + 1, Ver: &v})
}

// asyncOptimize applies OptimizerStep{s}: the step's gradient buffer plus
// the peer's tied-embedding gradient of s, clipped per stage, then reports
// the step done to the driver.
func (w *Worker) asyncOptimize(ctx context.Context, act scheduler.Action, b asyncBatch) error {
	a, s := w.asy, act.Step
	t := time.Now()
	a.setGrads(w.st, s)
	ps := w.st.Params()
	tw := w.st.TiedWeight()
	tied := w.S > 1 && (w.first || w.last) && !w.codec.untied
	if tied {
		in, ok := a.tiedIn[s]
		if !ok {
			return errors.New("optimizer step without the peer's tied-embedding gradient (a bug: the machine waits for it)")
		}
		delete(a.tiedIn, s)
		g := tw.Grad
		own := g
		if w.codec.con != nil {
			own = a.tiedOwn[s]
			delete(a.tiedOwn, s)
		}
		// x+y = y+x in IEEE arithmetic: both ends hold the same sum.
		for i := range own {
			own[i] += in[i]
		}
		if w.codec.con != nil {
			w.codec.con.expand(g, own)
		}
	}
	if w.codec.con != nil {
		if err := w.codec.con.projectGrads(); err != nil {
			return err
		}
	}
	// Per-stage clipping (a global norm would wait for every stage's
	// gradient of s: a flush). The tied embedding is clipped by its own
	// norm, which both ends compute from the same sum, so its two copies
	// get the same update.
	sumsq := w.st.GradSumSquares()
	if tied {
		tsq := stages.GradSumSquares([]*stages.Param{tw})
		var rest []*stages.Param
		for _, p := range ps {
			if p != tw {
				rest = append(rest, p)
			}
		}
		// Not sumsq-tsq: Stage.GradSumSquares leaves out a tied lm_head.
		stages.ScaleGrads(rest, stages.ClipScale(stages.GradSumSquares(rest), a.clip))
		stages.ScaleGrads([]*stages.Param{tw}, stages.ClipScale(tsq, a.clip))
	} else {
		stages.ScaleGrads(ps, stages.ClipScale(sumsq, a.clip))
	}
	w.opt.Step(float32(b.lr))
	for _, p := range ps {
		clear(p.Grad)
	}
	if w.codec.con != nil {
		if err := w.codec.con.projectWeights(); err != nil {
			return err
		}
		if corr, _ := w.opt.DelayCorrection(); corr == stages.DelayNesterov {
			// The iterate too (the sync rule W ← U·Uᵀ·W after every
			// step is on the iterate): AdamW's elementwise update leaves
			// the subspace, and evaluation and checkpoints read it.
			if err := w.codec.con.projectMaster(w.opt.Master()); err != nil {
				return err
			}
		}
	}
	if b.hold {
		if err := a.hold(w, s); err != nil {
			return err
		}
	}
	delete(a.batches, s)
	w.vspan("optimizer", act, t) // Version: the one it makes
	w.stats.Busy += time.Since(t).Seconds()
	w.stats.Wall = time.Since(a.since).Seconds()
	a.since = time.Now()
	if l := w.linkTo(w.net.nextID); l != nil {
		ls := l.conn.Stats()
		w.stats.Candidate, w.stats.RTTMs = ls.Candidate, float64(ls.RTT)/1e6
	}
	if w.ownProcess {
		w.stats.PeakRSS = PeakRSS()
	}
	st := w.stats
	w.stats = workerStats{}
	rep := ctrlMsg{Kind: ctrlDone, Step: s, SumSq: sumsq, Stats: &st}
	if w.last {
		rep.Loss = a.losses[s] / float64(w.M)
		delete(a.losses, s)
	}
	return w.sendCtrl(ctx, rep)
}

// buffer is a free weight buffer, allocated like ps if none is free (past
// versions kept for a snapshot come on top of StashBound).
func (a *asyncRun) buffer(ps []*stages.Param) [][]float32 {
	if n := len(a.free); n > 0 {
		buf := a.free[n-1]
		a.free = a.free[:n-1]
		return buf
	}
	return allocLike(ps, false)
}

// hold copies the stage's iterate and optimizer state after step, and at
// a snapshot the weight versions a restart at step+1 needs.
func (a *asyncRun) hold(w *Worker, step int) error {
	if a.held == nil {
		a.held = map[int]*asyncHeld{}
	}
	h := a.spare
	a.spare = nil
	if h == nil {
		h = &asyncHeld{}
		for _, t := range w.opt.Master() {
			h.weights = append(h.weights, make([]float32, len(t.Data)))
		}
	}
	a.held[step] = h
	for k, t := range w.opt.Master() {
		copy(h.weights[k], t.Data)
	}
	optStep, ts := w.opt.State()
	if len(h.opt) != len(ts) {
		h.opt = make([]stages.Tensor, len(ts))
		for i, t := range ts {
			h.opt[i] = stages.Tensor{Name: t.Name, Shape: t.Shape, Data: make([]float32, len(t.Data))}
		}
	}
	for i, t := range ts {
		copy(h.opt[i].Data, t.Data)
	}
	h.step, h.optStep = step, optStep
	for _, buf := range h.hist {
		a.free = append(a.free, buf)
	}
	h.hist = nil
	if !a.snapAt(step + 1) {
		h.live = nil
		return nil
	}
	ps := w.st.Params()
	h.hist = map[int][][]float32{}
	for _, v := range a.m.HistoryAt(step + 1) {
		src := a.stash[v]
		if src == nil {
			src = a.past[v]
		}
		if src == nil {
			return fmt.Errorf("snapshot of step %d: weight version %d is neither stashed nor kept (a bug: keepsPast)", step+1, v)
		}
		buf := a.buffer(ps)
		for k := range buf {
			copy(buf[k], src[k])
		}
		h.hist[v] = buf
	}
	// Versions kept for this snapshot and no later one go back.
	for v, buf := range a.past {
		if !a.keepsPast(v, step+1) {
			a.free = append(a.free, buf)
			delete(a.past, v)
		}
	}
	if corr, _ := w.opt.DelayCorrection(); corr != stages.DelayNone {
		if h.live == nil {
			h.live = allocLike(ps, false)
		}
		for k, p := range ps {
			copy(h.live[k], p.Data)
		}
	}
	return nil
}

// addBatch files a step command: the batch (first and last stage), the
// learning rate and whether to hold a copy.
func (w *Worker) addBatch(m ctrlMsg) error {
	a := w.asy
	if m.Step < a.m.First() || m.Step >= a.steps {
		return fmt.Errorf("driver sent step %d, outside the run's [%d, %d)", m.Step, a.m.First(), a.steps)
	}
	if _, dup := a.batches[m.Step]; dup {
		return fmt.Errorf("driver sent step %d twice", m.Step)
	}
	b := asyncBatch{lr: m.LR, hold: m.Hold}
	if w.first || w.last {
		N := w.B * w.T
		if len(m.blob) != w.M*N*2*w.idw {
			return fmt.Errorf("step %d: batch blob has %d bytes, want %d", m.Step, len(m.blob), w.M*N*2*w.idw)
		}
		b.tokens, b.targets = make([]int32, w.M*N), make([]int32, w.M*N)
		if err := getIDs(b.tokens, m.blob, w.idw, w.V); err != nil {
			return fmt.Errorf("step %d: batch: %w", m.Step, err)
		}
		if err := getIDs(b.targets, m.blob[w.M*N*w.idw:], w.idw, w.V); err != nil {
			return fmt.Errorf("step %d: batch: %w", m.Step, err)
		}
	}
	a.batches[m.Step] = b
	return nil
}

// drainCtrl takes the driver's commands that have come, without waiting.
func (w *Worker) drainCtrl(ctx context.Context) error {
	for {
		select {
		case m, ok := <-w.ctl.ctrlCh:
			if !ok {
				return errors.New("control link closed")
			}
			if err := w.asyncCtrl(ctx, m); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// awaitAsync waits for one frame from the links or one command from the
// driver, and files it.
func (w *Worker) awaitAsync(ctx context.Context) error {
	m, c, err := w.nextEvent(ctx, w.ctl.ctrlCh)
	if err != nil {
		return err
	}
	if c != nil {
		return w.asyncCtrl(ctx, *c)
	}
	return w.fileAsync(m)
}

// asyncCtrl carries out a driver command that came while streaming.
func (w *Worker) asyncCtrl(ctx context.Context, m ctrlMsg) error {
	var reply ctrlMsg
	var err error
	switch m.Kind {
	case ctrlStep:
		return w.addBatch(m)
	case ctrlEval:
		reply, err = w.asyncEval(ctx, m)
	case ctrlState:
		reply, err = w.asyncState(m)
	case ctrlAbort:
		// The stream stops here; Run serves the abort (readCtrl has
		// cancelled this command already).
		w.ctl.pendingAbort = &m
		return context.Canceled
	case ctrlFault:
		reply, err = w.serve(ctx, m)
	default:
		return fmt.Errorf("async: control message %q while streaming (restores and relinks come after an abort)", m.Kind)
	}
	if err != nil {
		return err
	}
	return w.sendCtrl(ctx, reply)
}

// heldAt is the copy of step, once the driver asks for it; copies of
// earlier steps are dropped (the driver asks in step order).
func (a *asyncRun) heldAt(what string, step int) (*asyncHeld, error) {
	h := a.held[step]
	if h == nil {
		return nil, fmt.Errorf("async: %s of step %d asked for, but this stage holds no copy of it (the driver holds the steps engine.KeepsState names)", what, step+1)
	}
	for k, old := range a.held {
		if k < step {
			delete(a.held, k)
			a.spare = old
		}
	}
	return h, nil
}

// asyncEval evaluates the copy held at the step the driver names.
func (w *Worker) asyncEval(ctx context.Context, m ctrlMsg) (ctrlMsg, error) {
	h, err := w.asy.heldAt("evaluation", m.Step)
	if err != nil {
		return ctrlMsg{}, err
	}
	w.asy.useWeights(w.st, h.weights)
	defer w.asy.useWeights(w.st, nil)
	r, err := w.eval(ctx, m)
	r.Step = h.step
	return r, err
}

// asyncState sends the copy held at the step the driver names; with Hold
// (a snapshot) also the weight versions a restart there needs, as
// "async.v<version>.<param>" and "async.live.<param>" tensors. Before the
// stream began it sends the stage as it is (the run's first snapshot).
func (w *Worker) asyncState(m ctrlMsg) (ctrlMsg, error) {
	a := w.asy
	if !a.begun && !a.stale {
		step, ts := w.opt.State()
		return ctrlMsg{Kind: ctrlStateIs, Step: m.Step, OptimStep: step, blob: encodeTensors(append(w.st.StateDict(), ts...))}, nil
	}
	h, err := a.heldAt("state", m.Step)
	if err != nil {
		return ctrlMsg{}, err
	}
	a.useWeights(w.st, h.weights)
	all := append(w.st.StateDict(), h.opt...)
	a.useWeights(w.st, nil)
	if m.Hold {
		if !a.snapAt(m.Step + 1) {
			return ctrlMsg{}, fmt.Errorf("async: snapshot of step %d asked for, but snapshots are every faults.snapshot_every steps (the stages keep the versions they need only there)", m.Step+1)
		}
		ps := w.st.Params()
		for v, buf := range h.hist {
			for k, p := range ps {
				all = append(all, stages.Tensor{Name: fmt.Sprintf("%s%d.%s", asyncVersionPrefix, v, p.Name), Shape: p.Shape, Data: buf[k]})
			}
		}
		for k, p := range ps {
			if h.live != nil {
				all = append(all, stages.Tensor{Name: asyncLivePrefix + p.Name, Shape: p.Shape, Data: h.live[k]})
			}
		}
	}
	return ctrlMsg{Kind: ctrlStateIs, Step: h.step, OptimStep: h.optStep, blob: encodeTensors(all)}, nil
}

// fileAsync decodes a frame that came while streaming and tells the
// machine. The machine's windows bound what may arrive: a frame outside
// them is rejected.
func (w *Worker) fileAsync(m inMsg) error {
	a := w.asy
	_, step := splitStep(m.h.Step)
	if step == evalStep {
		a.evalq = append(a.evalq, m)
		return nil
	}
	reject := func(err error) error { return &rejectedFrame{peer: m.from.peer, err: err} }
	if m.h.Micro >= uint32(w.M) {
		return reject(fmt.Errorf("%v frame for step %d micro %d: micro-batch out of range", m.h.Type, step, m.h.Micro))
	}
	key := [2]int{step, int(m.h.Micro)}
	rows := w.B * w.T
	var dec *compression.LinkCodec
	var ev scheduler.Event
	switch m.h.Type {
	case wire.TypeActivation:
		dec, ev = w.codec.decPrev, scheduler.ActivationArrived(step, int(m.h.Micro))
	case wire.TypeGradient:
		dec, ev = w.codec.decNext, scheduler.GradientArrived(step, int(m.h.Micro))
	case wire.TypeTiedGrad:
		ev = scheduler.EmbeddingGradArrived(step)
		if a.m.Duplicate(ev) {
			return nil // a copy the network made
		}
		var in []float32
		if !w.codec.untied {
			n := len(w.st.TiedWeight().Data)
			if w.codec.con != nil {
				n = n / w.C * w.codec.con.basis.K
			}
			if len(m.payload) != stampSize+4*n {
				return reject(fmt.Errorf("tied gradient of step %d: %d bytes, want %d", step, len(m.payload), stampSize+4*n))
			}
			in = make([]float32, n)
			for i := range in {
				v := math.Float32frombits(binary.LittleEndian.Uint32(m.payload[stampSize+4*i:]))
				if !(v >= -maxAbsValue && v <= maxAbsValue) {
					return reject(fmt.Errorf("tied gradient of step %d holds %v", step, v))
				}
				in[i] = v
			}
		} else if len(m.payload) != stampSize {
			return reject(fmt.Errorf("tied gradient of step %d: %d bytes, but the head is untied: want only the %d-byte stamp", step, len(m.payload), stampSize))
		}
		if err := a.m.Step(ev); err != nil {
			return reject(err)
		}
		a.tiedIn[step] = in
		w.netWait(time.Now(), m)
		return nil
	default:
		return reject(fmt.Errorf("unexpected %v frame on a stage link", m.h.Type))
	}
	if a.m.Duplicate(ev) {
		return nil // a copy the network made: its micro-batch has it already
	}
	dst := w.buf()
	var toks []int32
	if m.h.Type == wire.TypeActivation {
		toks = make([]int32, rows)
	}
	if _, err := w.decode(dec, m, dst, toks, rows); err != nil {
		w.release(dst)
		return reject(err)
	}
	if err := a.m.Step(ev); err != nil {
		w.release(dst)
		return reject(err)
	}
	w.observe(m)
	if m.h.Type == wire.TypeActivation {
		w.rx.acts[key], w.rx.toks[key] = dst, toks
	} else {
		w.rx.grads[key] = dst
	}
	return nil
}

// nextEvalMsg is the next evaluation frame; under async, stream frames
// that come before it are filed.
func (w *Worker) nextEvalMsg(ctx context.Context) (inMsg, error) {
	for {
		if a := w.asy; a != nil && len(a.evalq) > 0 {
			m := a.evalq[0]
			a.evalq = a.evalq[1:]
			return m, nil
		}
		m, err := w.nextMsg(ctx)
		if err != nil || w.asy == nil {
			return m, err
		}
		if _, st := splitStep(m.h.Step); st == evalStep {
			return m, nil
		}
		if err := w.fileAsync(m); err != nil {
			return inMsg{}, err
		}
	}
}

// InFlight is the async in-flight depth D a run of cfg uses: its
// pipeline.in_flight, or for 0 scheduler.InFlightFor of the slowest
// configured link's round trip (latency both ways plus an activation and a
// gradient at its bandwidth) and the compute in simulate.forward_ms,
// backward_ms and optimizer_ms (the fastest stage's forward and backward,
// the slowest optimizer, as sim.InFlightFor), or where those are not given
// defaultCompute. It is a function of the config alone, so every stage,
// wherever it runs, picks the same D.
func InFlight(cfg config.Config) int {
	if cfg.Pipeline.InFlight > 0 {
		return cfg.Pipeline.InFlight
	}
	act, grad, _, err := MessageBytes(cfg)
	if err != nil {
		act, grad = 0, 0
	}
	rtt := 0.0
	for i := 0; i+1 < cfg.Pipeline.Stages; i++ {
		p := cfg.LinkProfile(i, i+1)
		rt := 2 * p.LatencyMs / 1000
		if p.BandwidthMbps > 0 {
			rt += float64(act+grad) * 8 / (p.BandwidthMbps * 1e6)
		}
		rtt = max(rtt, rt)
	}
	pick := func(v []float64, def float64, f func(a, b float64) float64) float64 {
		if len(v) == 0 {
			return def
		}
		x := v[0]
		for _, y := range v[1:] {
			x = f(x, y)
		}
		return x / 1000 / cfg.Simulate.Speedup
	}
	sim := cfg.Simulate
	tf := pick(sim.ForwardMs, defaultCompute.Forward, math.Min)
	tb := pick(sim.BackwardMs, defaultCompute.Backward, math.Min)
	opt := pick(sim.OptimizerMs, defaultCompute.Optimizer, math.Max)
	return scheduler.InFlightFor(rtt, tf, tb, opt)
}

// defaultCompute is the compute InFlight assumes where the config gives
// none: per micro-batch forward and backward, and an optimizer step, in
// seconds, of the quickstart model cut into 4 stages on two cores (what
// `narrowband simulate` measured, docs/async.md). A faster machine only
// makes the chosen depth larger than needed, costing memory, not speed.
var defaultCompute = struct{ Forward, Backward, Optimizer float64 }{0.012, 0.024, 0.005}
