package pipeline

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
	"github.com/narrowband/narrowband/scheduler"
)

// A worker's links to its neighbours, and how it keeps them honest:
// heartbeats on every link and to the driver, epochs that make frames of an
// aborted attempt stale, rejection of bad frames, and re-establishing a
// link on the driver's word.

// epochShift puts the attempt's epoch in the high bits of a frame's step
// field: frames of an aborted attempt of the same step are then told
// apart from the redo's and dropped.
const epochShift = 40

func frameStep(epoch uint64, step int) uint64 { return epoch<<epochShift | uint64(step) }

func splitStep(s uint64) (epoch uint64, step int) {
	return s >> epochShift, int(s & (1<<epochShift - 1))
}

// maxAbsValue bounds the magnitude of any received activation or gradient
// element. Healthy values sit many orders of magnitude below; a frame
// holding more is rejected as corrupt (flipped exponent bits make values
// like 1e30).
const maxAbsValue = 1e6

// link is one neighbour link: the connection (through its fault layer),
// the queue its sender goroutine drains, and when anything last arrived.
type link struct {
	peer int // the neighbour's stage
	conn transport.Conn
	out  chan []byte
	// side carries a swarm's gradient-sum frames (worker_swarm.go) to
	// the sum, which reads them by link, beside the step's inbox.
	side  chan []byte
	heard atomic.Int64 // unix ns of the last frame received
	stop  context.CancelFunc
	sent  sync.WaitGroup
	// outMu and closed let goroutines other than the worker's own (a
	// download being served, a gradient sum's pass down) queue frames
	// without racing detach's close of out.
	outMu  sync.Mutex
	closed bool
}

// linkFailure is a link that went silent while this stage waited on it.
type linkFailure struct {
	peer   int
	silent time.Duration
	err    error
}

func (e *linkFailure) Error() string {
	if e.err != nil {
		return fmt.Sprintf("link to stage %d failed: %v", e.peer, e.err)
	}
	return fmt.Sprintf("link to stage %d silent for %.1fs", e.peer, e.silent.Seconds())
}

// rejectedFrame is a frame that failed the checksum, its codec's checks
// or the value checks; it never reaches the model.
type rejectedFrame struct {
	peer int
	err  error
}

func (e *rejectedFrame) Error() string {
	return fmt.Sprintf("rejected a frame from stage %d: %v", e.peer, e.err)
}

// attach starts moving frames over c as the link to stage peer.
func (w *Worker) attach(ctx context.Context, peer int, c transport.Conn) *link {
	if w.net.faults[peer] == nil {
		w.net.faults[peer] = newLinkFaults(uint64(w.id)<<16 | uint64(peer))
	}
	lctx, stop := context.WithCancel(ctx)
	l := &link{peer: peer, conn: faultConn{Conn: c, f: w.net.faults[peer]}, out: make(chan []byte, 1024), side: make(chan []byte, 4096), stop: stop}
	l.heard.Store(time.Now().UnixNano())
	w.net.linkMu.Lock()
	w.net.nbr[peer] = l
	w.net.linkMu.Unlock()
	go w.receive(lctx, l)
	l.sent.Add(1)
	go func() {
		defer l.sent.Done()
		var failed error
		for msg := range l.out {
			if failed != nil {
				continue // keep draining: compute must never block on a dead link
			}
			if failed = l.conn.Send(lctx, msg); failed != nil {
				// The receiving side of this link reports the failure
				// to the step that waits on it.
				slog.Debug("link send failed", "stage", w.id, "peer", peer, "err", failed)
			}
		}
	}()
	return l
}

// detach stops a link's goroutines and closes its connection.
func (w *Worker) detach(l *link) {
	w.net.linkMu.Lock()
	if w.net.nbr[l.peer] == l {
		delete(w.net.nbr, l.peer)
	}
	w.net.linkMu.Unlock()
	l.stop()
	l.outMu.Lock()
	l.closed = true
	close(l.out)
	l.outMu.Unlock()
	l.sent.Wait()
	l.conn.Close()
}

// linkTo is the current link to stage peer (nil if none).
func (w *Worker) linkTo(peer int) *link {
	w.net.linkMu.Lock()
	defer w.net.linkMu.Unlock()
	return w.net.nbr[peer]
}

func (w *Worker) allLinks() []*link {
	w.net.linkMu.Lock()
	defer w.net.linkMu.Unlock()
	out := make([]*link, 0, len(w.net.nbr))
	for _, l := range w.net.nbr {
		out = append(out, l)
	}
	return out
}

// receive moves frames from one link into the inbox; heartbeats only mark
// the link alive.
func (w *Worker) receive(ctx context.Context, l *link) {
	for {
		raw, err := l.conn.Recv(ctx)
		if err != nil {
			close(l.side) // a sum reading this link stops too
			select {
			case w.net.inbox <- inMsg{from: l, err: err}:
			case <-ctx.Done():
			}
			return
		}
		l.heard.Store(time.Now().UnixNano())
		h, p, err := wire.Decode(raw, transport.MaxMessage)
		if err == nil && h.Type == wire.TypeHeartbeat {
			continue
		}
		if err == nil && w.rep != nil && (h.Type == wire.TypeReplicaGrad || h.Type == wire.TypeSync || h.Type == wire.TypeVerify) {
			select {
			case l.side <- raw:
			case <-ctx.Done():
				return
			}
			continue
		}
		if err != nil && len(raw) >= wire.HeaderSize {
			// Untrusted, but enough to tell a bad frame of an aborted
			// attempt (stale: ignored) from one of this attempt.
			h.Step = binary.LittleEndian.Uint64(raw[10:])
		}
		select {
		case w.net.inbox <- inMsg{from: l, h: h, payload: p, at: time.Now(), bad: err}:
		case <-ctx.Done():
			return
		}
	}
}

// nextMsg waits for the next frame of this attempt. Frames of an aborted
// attempt (older epoch) and of replaced links are dropped; a bad frame is
// a rejectedFrame error; a link silent longer than the link timeout is a
// linkFailure.
func (w *Worker) nextMsg(ctx context.Context) (inMsg, error) {
	m, _, err := w.nextEvent(ctx, nil)
	return m, err
}

// nextEvent is nextMsg that also returns a driver command from ctrl, if
// one comes first (nil ctrl: frames only).
func (w *Worker) nextEvent(ctx context.Context, ctrl <-chan ctrlMsg) (inMsg, *ctrlMsg, error) {
	tick := time.NewTicker(w.net.hb)
	defer tick.Stop()
	for {
		select {
		case c, ok := <-ctrl:
			if !ok {
				return inMsg{}, nil, errors.New("control link closed")
			}
			return inMsg{}, &c, nil
		case m := <-w.net.inbox:
			if w.linkTo(m.from.peer) != m.from {
				continue // a replaced link's last words
			}
			if m.err != nil {
				if errors.Is(m.err, context.Canceled) {
					return m, nil, m.err
				}
				return m, nil, &linkFailure{peer: m.from.peer, err: m.err}
			}
			if ep, _ := splitStep(m.h.Step); ep < w.ctl.epoch || (ep > w.ctl.epoch && m.bad == nil) {
				continue // a stale frame
			}
			if m.bad != nil {
				return m, nil, &rejectedFrame{peer: m.from.peer, err: m.bad}
			}
			return m, nil, nil
		case <-tick.C:
			for _, l := range w.allLinks() {
				if silent := time.Since(time.Unix(0, l.heard.Load())); silent > w.net.linkTimeout {
					return inMsg{}, nil, &linkFailure{peer: l.peer, silent: silent}
				}
			}
		case <-ctx.Done():
			return inMsg{}, nil, ctx.Err()
		}
	}
}

// heartbeats tells the driver and every neighbour that this stage lives.
func (w *Worker) heartbeats(ctx context.Context) {
	tick := time.NewTicker(w.net.hb)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		// Not sendCtrl: it reads the epoch, which Run changes meanwhile;
		// the driver drops heartbeats of any epoch.
		b, err := encodeCtrl(ctrlMsg{Kind: ctrlHeartbeat, Stage: w.id})
		if err != nil {
			return
		}
		w.ctl.ctrlMu.Lock()
		err = sendControl(ctx, w.links.Ctrl, b, w.id)
		w.ctl.ctrlMu.Unlock()
		if err != nil {
			return
		}
		frame := wire.Append(nil, wire.Header{Type: wire.TypeHeartbeat, Stage: uint16(w.id)}, nil)
		w.net.linkMu.Lock()
		for _, l := range w.net.nbr {
			select {
			case l.out <- frame:
			default: // a full queue is traffic enough
			}
		}
		w.net.linkMu.Unlock()
	}
}

// readCtrl reads the control link: heartbeats are dropped, an abort
// cancels the command in progress, everything goes to ctrlCh in order.
func (w *Worker) readCtrl(ctx context.Context) {
	defer close(w.ctl.ctrlCh)
	var parts controlReader
	for {
		raw, err := parts.read(ctx, w.links.Ctrl)
		if err != nil {
			return // the driver is gone
		}
		m, err := decodeCtrl(raw)
		if err != nil {
			m = ctrlMsg{Kind: ctrlError, Err: err.Error()}
		}
		if m.Kind == ctrlHeartbeat {
			continue
		}
		if m.Kind == ctrlAbort {
			w.ctl.aborted.Store(m.Epoch)
			w.ctl.opMu.Lock()
			if w.ctl.opCancel != nil {
				w.ctl.opCancel()
			}
			w.ctl.opMu.Unlock()
		}
		select {
		case w.ctl.ctrlCh <- m:
		case <-ctx.Done():
			return
		}
	}
}

// beginOp gives a command a context that an abort of a later epoch
// cancels (at once, if the abort already arrived).
func (w *Worker) beginOp(ctx context.Context, epoch uint64) (context.Context, func()) {
	w.ctl.opMu.Lock()
	defer w.ctl.opMu.Unlock()
	op, cancel := context.WithCancel(ctx)
	if w.ctl.aborted.Load() > epoch {
		cancel()
	}
	w.ctl.opCancel = cancel
	return op, func() {
		w.ctl.opMu.Lock()
		w.ctl.opCancel = nil
		w.ctl.opMu.Unlock()
		cancel()
	}
}

// reset forgets the aborted attempt: schedule, received tensors, gradients.
// Weights and optimizer state are untouched (an attempt is aborted only
// before its optimizer step; later failures restore a snapshot). An async
// stream is abandoned: recovery always restores a snapshot after it.
func (w *Worker) reset() error {
	if w.asy != nil {
		w.asy.abandon(w)
	} else {
		sm, err := scheduler.NewStage(w.spec, w.id)
		if err != nil {
			return err
		}
		w.sm = sm
	}
	w.started = false
	for k, b := range w.rx.acts {
		w.release(b)
		delete(w.rx.acts, k)
	}
	for k, b := range w.rx.grads {
		w.release(b)
		delete(w.rx.grads, k)
	}
	clear(w.rx.toks)
	clear(w.net.seen)
	w.st.ZeroGrad()
	w.stats = workerStats{}
	for {
		select {
		case <-w.net.inbox:
		default:
			return nil
		}
	}
}
