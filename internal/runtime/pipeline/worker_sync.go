package pipeline

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"sync"
	"time"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
	"github.com/narrowband/narrowband/stages"
)

// How a peer joins a running swarm (docs/swarm.md, "Joining"): it
// downloads its stage's weights and optimizer state from a live replica
// over their own link, never through the coordinator, while the replicas
// go on training. The state it gets is the replica's at the step boundary
// the download began at; so that it ends with the replicas' state bit for
// bit, the replica also sends it, after each later step's gradient sum,
// that step's summed gradient, clip scale and learning rate, and the
// joiner replays those steps (the same AdamW on the same numbers gives the
// same bits). At the boundary it is admitted at, it has replayed every
// step before it; the driver compares its digest with the replica's.
//
// Frames are wire.TypeSync, checksummed like every frame; the payload's
// first byte says what it is: a state chunk (index, count, bytes) or a
// replay chunk (step, index, count, learning rate, scale, floats).

const (
	syncState  = 1
	syncReplay = 2
	// syncChunk is the bytes of state in one frame, as the gradient sum's
	// chunks: well under a data channel's message limit.
	syncChunk = 64 << 10
)

// breakReplay scales the learning rate a joiner replays with: 1, except
// in the test that shows the driver's admission check catches a replay
// that is not the replicas' steps.
var breakReplay float32 = 1

// syncer is a joiner's download in progress.
type syncer struct {
	mu      sync.Mutex
	cond    *sync.Cond
	applied int   // optimizer steps the state holds (replayed included); -1 until the state is in
	target  int   // stop after replaying up to here (admission); -1: not yet known
	err     error // the download failed
	done    bool  // the goroutine ended
	cancel  context.CancelFunc
}

// push queues frame on l from a goroutine of its own, unless the link was
// detached meanwhile. (It holds outMu while the queue is full: the link's
// sender drains it even after a failure, so detach waits at most that
// long.)
func push(ctx context.Context, l *link, frame []byte) error {
	l.outMu.Lock()
	defer l.outMu.Unlock()
	if l.closed {
		return fmt.Errorf("link to node %d closed", l.peer)
	}
	select {
	case l.out <- frame:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// syncServe starts sending node m.Peer this stage's state as it is now, a
// step boundary, and from the next step on every step to replay.
func (w *Worker) syncServe(ctx context.Context, m ctrlMsg) (ctrlMsg, error) {
	l := w.linkTo(m.Peer)
	if l == nil {
		return ctrlMsg{}, fmt.Errorf("sync: no link to node %d here", m.Peer)
	}
	step, ts := w.opt.State()
	blob := encodeTensors(append(w.st.StateDict(), ts...))
	n := (len(blob) + syncChunk - 1) / syncChunk
	stage := w.id
	go func() {
		ctx := w.net.runCtx
		for k := 0; k < n; k++ {
			part := blob[k*syncChunk : min((k+1)*syncChunk, len(blob))]
			p := make([]byte, 9, 9+len(part))
			p[0] = syncState
			binary.LittleEndian.PutUint32(p[1:], uint32(k))
			binary.LittleEndian.PutUint32(p[5:], uint32(n))
			p = append(p, part...)
			f := wire.Append(nil, wire.Header{Type: wire.TypeSync, Stage: uint16(stage), Step: uint64(step), Micro: uint32(k)}, p)
			if push(ctx, l, f) != nil {
				return // the joiner or its link is gone: the driver hears of it
			}
		}
	}()
	if w.replayTo == nil {
		w.replayTo = map[int]bool{}
	}
	w.replayTo[m.Peer] = true
	return ctrlMsg{Kind: ctrlOK, OptimStep: step, Count: int64(len(blob))}, nil
}

// replay sends the step's final gradients, scale and learning rate to the
// nodes syncing from this replica, before it applies them itself.
func (w *Worker) replay(lr float64, scale float32) {
	step := w.opt.StepCount() // the optimizer step this applies, as the joiner counts
	for node := range w.replayTo {
		l := w.linkTo(node)
		if l == nil {
			delete(w.replayTo, node)
			continue
		}
		chunks := gradChunks(w.st.Params())
		for k, c := range chunks {
			p := make([]byte, 29, 29+4*len(c))
			p[0] = syncReplay
			binary.LittleEndian.PutUint64(p[1:], uint64(step))
			binary.LittleEndian.PutUint32(p[9:], uint32(k))
			binary.LittleEndian.PutUint32(p[13:], uint32(len(chunks)))
			binary.LittleEndian.PutUint64(p[17:], math.Float64bits(lr))
			binary.LittleEndian.PutUint32(p[25:], math.Float32bits(scale))
			for _, x := range c {
				p = binary.LittleEndian.AppendUint32(p, math.Float32bits(x))
			}
			f := wire.Append(nil, wire.Header{Type: wire.TypeSync, Stage: uint16(w.id), Step: uint64(step), Micro: uint32(k)}, p)
			if push(w.net.runCtx, l, f) != nil {
				delete(w.replayTo, node)
				break
			}
			w.stats.SentSyncBytes += int64(len(f))
		}
	}
}

// gradChunks cuts the parameters' gradients into chunks of replicaChunk
// floats, in the parameters' fixed order.
func gradChunks(ps []*stages.Param) [][]float32 {
	var chunks [][]float32
	for _, p := range ps {
		for g := p.Grad; len(g) > 0; {
			n := min(len(g), replicaChunk)
			chunks = append(chunks, g[:n])
			g = g[n:]
		}
	}
	return chunks
}

// syncFetch starts this joiner's download from node m.Peer of a state of
// m.Count bytes at optimizer step m.OptimStep.
func (w *Worker) syncFetch(m ctrlMsg) (ctrlMsg, error) {
	l := w.linkTo(m.Peer)
	if l == nil {
		return ctrlMsg{}, fmt.Errorf("sync: no link to node %d here", m.Peer)
	}
	if m.Count <= 0 || m.Count > 1<<40 || m.OptimStep < 0 {
		return ctrlMsg{}, fmt.Errorf("sync: a state of %d bytes at step %d", m.Count, m.OptimStep)
	}
	restarts := 0
	if old := w.sync; old != nil {
		// A download from a replica that died: start again from another
		// (its state is of another step, so no chunk can be kept).
		old.cancel()
		old.mu.Lock()
		for !old.done {
			old.cond.Wait()
		}
		old.mu.Unlock()
		restarts = w.syncRestarts + 1
	}
	ctx, cancel := context.WithCancel(w.net.runCtx)
	s := &syncer{applied: -1, target: -1, cancel: cancel}
	s.cond = sync.NewCond(&s.mu)
	w.sync, w.syncRestarts = s, restarts
	go w.fetch(ctx, s, sideConn{l}, m.Peer, m.OptimStep, int(m.Count), restarts)
	return ctrlMsg{Kind: ctrlOK}, nil
}

// fetch is the joiner's download: the state's chunks, then each step to
// replay, until the admission's step.
func (w *Worker) fetch(ctx context.Context, s *syncer, c transport.Conn, from, step0, size, restarts int) {
	t0 := time.Now()
	fail := func(err error) {
		s.mu.Lock()
		first := s.err == nil
		if first {
			s.err = fmt.Errorf("sync from node %d: %w", from, err)
		}
		s.done = true
		s.cond.Broadcast()
		s.mu.Unlock()
		if first && ctx.Err() == nil {
			// The driver hears it and has the download go on from
			// another replica. (Epoch set: the attempt does not matter.)
			w.sendCtrl(w.net.runCtx, ctrlMsg{Kind: ctrlSynced, Epoch: 1, Err: s.err.Error()})
		}
	}
	blob := make([]byte, size)
	n := (size + syncChunk - 1) / syncChunk
	have := make([]bool, n)
	got := 0
	var early [][]byte // replay frames that came before the state was whole
	for got < n {
		raw, err := c.Recv(ctx)
		if err != nil {
			fail(err)
			return
		}
		h, p, err := wire.Decode(raw, transport.MaxMessage)
		if err != nil {
			fail(err)
			return
		}
		if h.Type != wire.TypeSync || len(p) < 1 {
			fail(fmt.Errorf("a %v frame on the download", h.Type))
			return
		}
		if p[0] == syncReplay {
			early = append(early, raw)
			continue
		}
		if p[0] != syncState || len(p) < 9 || h.Step != uint64(step0) {
			fail(fmt.Errorf("a sync frame of kind %d, step %d, %d bytes (want state chunks of step %d)", p[0], h.Step, len(p), step0))
			return
		}
		k, count := int(binary.LittleEndian.Uint32(p[1:])), int(binary.LittleEndian.Uint32(p[5:]))
		want := min(syncChunk, size-k*syncChunk)
		if count != n || k >= n || have[k] || len(p)-9 != want {
			fail(fmt.Errorf("state chunk %d of %d (%d bytes): want one of %d chunks, %d bytes, once each", k, count, len(p)-9, n, want))
			return
		}
		copy(blob[k*syncChunk:], p[9:])
		have[k] = true
		got++
	}
	ts, err := decodeTensors(blob)
	if err != nil {
		fail(err)
		return
	}
	st := &stages.State{Model: w.st.Config(), OptimStep: step0, Tensors: ts}
	if err := st.RestoreStage(w.st, w.opt); err != nil {
		fail(err)
		return
	}
	s.mu.Lock()
	s.applied = step0
	s.cond.Broadcast()
	s.mu.Unlock()
	w.sendCtrl(ctx, ctrlMsg{Kind: ctrlSynced, Epoch: 1, Count: int64(size), Duration: time.Since(t0).Seconds(), Frames: restarts})
	next := func() ([]byte, error) {
		if len(early) > 0 {
			raw := early[0]
			early = early[1:]
			return raw, nil
		}
		return c.Recv(ctx)
	}
	chunks := gradChunks(w.st.Params())
	for {
		s.mu.Lock()
		stop := s.target >= 0 && s.applied >= s.target
		s.mu.Unlock()
		if stop {
			break
		}
		lr, scale, err := w.recvReplay(next, s.applied, chunks)
		if err != nil {
			fail(err)
			return
		}
		stages.ScaleGrads(w.st.Params(), scale)
		w.opt.Step(float32(lr) * breakReplay)
		w.st.ZeroGrad()
		if w.codec.con != nil {
			if err := w.codec.con.projectWeights(); err != nil {
				fail(err)
				return
			}
		}
		s.mu.Lock()
		s.applied++
		s.cond.Broadcast()
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.done = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// recvReplay reads the chunks of the replay of optimizer step step into
// the gradients (chunks are views of them) and returns its learning rate
// and scale.
func (w *Worker) recvReplay(next func() ([]byte, error), step int, chunks [][]float32) (float64, float32, error) {
	var lr float64
	var scale float32
	for k, dst := range chunks {
		raw, err := next()
		if err != nil {
			return 0, 0, err
		}
		h, p, err := wire.Decode(raw, transport.MaxMessage)
		if err != nil {
			return 0, 0, err
		}
		if h.Type != wire.TypeSync || len(p) < 29 || p[0] != syncReplay {
			return 0, 0, fmt.Errorf("want replay chunk %d of step %d, got a %v frame", k, step, h.Type)
		}
		s, i, n := int(binary.LittleEndian.Uint64(p[1:])), int(binary.LittleEndian.Uint32(p[9:])), int(binary.LittleEndian.Uint32(p[13:]))
		if s != step || i != k || n != len(chunks) || len(p)-29 != 4*len(dst) {
			return 0, 0, fmt.Errorf("replay chunk %d of %d of step %d (%d bytes): want chunk %d of %d of step %d (%d bytes)", i, n, s, len(p)-29, k, len(chunks), step, 4*len(dst))
		}
		l, sc := math.Float64frombits(binary.LittleEndian.Uint64(p[17:])), math.Float32frombits(binary.LittleEndian.Uint32(p[25:]))
		if k == 0 {
			lr, scale = l, sc
		} else if l != lr || sc != scale {
			return 0, 0, fmt.Errorf("replay of step %d: chunk %d has learning rate %v and scale %v, chunk 0 %v and %v", step, k, l, sc, lr, scale)
		}
		for j := range dst {
			v := math.Float32frombits(binary.LittleEndian.Uint32(p[29+4*j:]))
			if !(v >= -maxAbsValue && v <= maxAbsValue) {
				return 0, 0, fmt.Errorf("replay of step %d holds %v", step, v)
			}
			dst[j] = v
		}
	}
	if !(lr >= 0 && lr < 1e3) || !(scale >= 0 && scale <= 1) {
		return 0, 0, fmt.Errorf("replay of step %d: learning rate %v, scale %v", step, lr, scale)
	}
	return lr, scale, nil
}

// admit waits until the download has replayed every step before
// optimizer step m.OptimStep and answers with the state's digest, for the
// driver to hold against a replica's.
func (w *Worker) admit(ctx context.Context, m ctrlMsg) (ctrlMsg, error) {
	s := w.sync
	if s == nil {
		return ctrlMsg{}, fmt.Errorf("admit: this peer has downloaded no state")
	}
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	s.target = m.OptimStep
	for !s.done && s.applied < m.OptimStep && ctx.Err() == nil {
		s.cond.Wait()
	}
	applied, err := s.applied, s.err
	s.mu.Unlock()
	if ctx.Err() != nil {
		return ctrlMsg{}, ctx.Err()
	}
	if err != nil {
		return ctrlMsg{}, err
	}
	if applied != m.OptimStep {
		return ctrlMsg{}, fmt.Errorf("admit at optimizer step %d: the download reached step %d", m.OptimStep, applied)
	}
	s.cancel()
	w.sync = nil
	step, ts := w.opt.State()
	h := fnv.New64a()
	h.Write(encodeTensors(append(w.st.StateDict(), ts...)))
	return ctrlMsg{Kind: ctrlOK, OptimStep: step, Hash: h.Sum64()}, nil
}
