package transport

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults for ShapeOptions.
const (
	// DefaultMaxQueued lets a shaped Send run far ahead of a slow link (a
	// whole pipeline's worth of activations) before it pushes back.
	DefaultMaxQueued = 256 << 20
	// DefaultCloseGrace is how long Close lets queued messages finish their
	// trip: enough for a few 64 KiB frames over a slow, long link.
	DefaultCloseGrace = 2 * time.Second
)

// ShapeOptions configures Shape.
type ShapeOptions struct {
	// Seed drives jitter and loss; the same seed and the same sends give
	// the same delays.
	Seed uint64
	// MaxQueuedBytes is how many bytes may wait in the shaper before Send
	// blocks (a single larger message is still accepted into an empty
	// queue). 0 means DefaultMaxQueued.
	MaxQueuedBytes int
	// CloseGrace bounds how long Close waits for queued messages to be
	// delivered on schedule; what is still queued then is dropped (and
	// logged). 0 means DefaultCloseGrace; negative means drop at once.
	CloseGrace time.Duration
}

// Validate reports a negative queue limit.
func (o ShapeOptions) Validate() error {
	if o.MaxQueuedBytes < 0 {
		return fmt.Errorf("transport: ShapeOptions.MaxQueuedBytes = %d; use 0 for the default (%d) or a positive byte count", o.MaxQueuedBytes, DefaultMaxQueued)
	}
	return nil
}

// Shape wraps c so that what this end sends crosses a link with profile p:
// bandwidth, latency, jitter and loss, computed in-process (the kernel here
// has no netem). Only the outgoing direction is shaped; shape both ends of
// a pair for a symmetric link, with different seeds.
//
// Send never waits for the link: it copies the message into a queue and
// returns (it blocks only when MaxQueuedBytes are queued). One goroutine per
// shaped end hands each message to c when the model says it arrives. The
// schedule uses absolute times (a running "link free at" clock), so timer
// granularity does not accumulate into rate errors. If c itself pushes
// back, the link is treated as paused for that long.
//
// Close is a lingering close: it stops new Sends and unblocks this end's
// Send and Recv at once, then waits up to CloseGrace for queued messages to
// be delivered on schedule, then closes c. The shaped Conn owns c.
//
// Stats reports c's receive side and candidate, this end's own send
// counters and SendBlocked (time Send waited for queue room), and Queued,
// the total time delivered messages spent in the shaper.
func Shape(c Conn, p LinkProfile, o ShapeOptions) (Conn, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.MaxQueuedBytes == 0 {
		o.MaxQueuedBytes = DefaultMaxQueued
	}
	if o.CloseGrace == 0 {
		o.CloseGrace = DefaultCloseGrace
	}
	s := &shaped{
		inner:   c,
		opts:    o,
		latency: time.Duration(p.LatencyMs * float64(time.Millisecond)),
		model:   newLinkModel(p, o.Seed),
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.closing, s.stopRecv = context.WithCancel(context.Background())
	s.deliverCtx, s.abort = context.WithCancel(context.Background())
	go s.deliver()
	return s, nil
}

// pauseThreshold is how long an inner Send must take before the shaper
// treats it as the far end pushing back rather than ordinary copying.
const pauseThreshold = 5 * time.Millisecond

type shapedMsg struct {
	msg    []byte
	queued time.Time // when Send accepted it
	arrive time.Time // when the model delivers it
}

type shaped struct {
	inner   Conn
	opts    ShapeOptions
	latency time.Duration // the profile's one-way latency

	closing    context.Context // done once Close starts: unblocks Recv
	stopRecv   context.CancelFunc
	deliverCtx context.Context // done when Close gives up on the queue
	abort      context.CancelFunc
	done       chan struct{} // closed when deliver returns
	closeOnce  sync.Once
	closeErr   error

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every change
	model      *linkModel
	q          []shapedMsg
	queuedB    int
	closed     bool
	deliverErr error // why delivery stopped early, if it did
	sent       uint64
	sentMsgs   uint64
	blocked    time.Duration
	inQueue    time.Duration
}

// broadcast wakes all waiters; s.mu must be held.
func (s *shaped) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *shaped) Send(ctx context.Context, msg []byte) error {
	if len(msg) > MaxMessage {
		return fmt.Errorf("transport: shaped send of %d bytes (limit %d): %w", len(msg), MaxMessage, ErrTooLarge)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	blocked, err := waitForRoom(ctx, &s.mu, func() chan struct{} { return s.changed },
		func() bool { return s.queuedB > 0 && s.queuedB+len(msg) > s.opts.MaxQueuedBytes },
		func() error {
			switch {
			case s.closed:
				return ErrClosed
			case s.deliverErr != nil:
				return fmt.Errorf("transport: shaped link stopped delivering: %w", s.deliverErr)
			}
			return nil
		})
	s.blocked += blocked
	if err != nil {
		return err
	}
	now := time.Now()
	arrive, _ := s.model.schedule(now, len(msg))
	s.q = append(s.q, shapedMsg{msg: bytes.Clone(msg), queued: now, arrive: arrive})
	s.queuedB += len(msg)
	s.sent += uint64(len(msg))
	s.sentMsgs++
	s.broadcast()
	return nil
}

// deliver is the far end of the wire: it hands each queued message to the
// inner Conn at its arrival time, in order.
func (s *shaped) deliver() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		s.mu.Lock()
		for len(s.q) == 0 && !s.closed {
			ch := s.changed
			s.mu.Unlock()
			<-ch
			s.mu.Lock()
		}
		if len(s.q) == 0 { // closed and drained
			s.mu.Unlock()
			return
		}
		m := s.q[0]
		s.mu.Unlock()

		if d := time.Until(m.arrive); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-s.deliverCtx.Done():
				timer.Stop()
				s.stop(fmt.Errorf("close grace period over: %w", ErrClosed))
				return
			}
		}
		start := time.Now()
		err := s.inner.Send(s.deliverCtx, m.msg)
		end := time.Now()
		if err != nil {
			if s.deliverCtx.Err() != nil {
				err = fmt.Errorf("close grace period over: %w", ErrClosed)
			}
			s.stop(err)
			return
		}
		s.mu.Lock()
		s.q[0] = shapedMsg{}
		s.q = s.q[1:]
		if len(s.q) == 0 {
			s.q = nil
		}
		s.queuedB -= len(m.msg)
		s.inQueue += end.Sub(m.queued)
		// The inner Conn pushed back (its receiver is slow): the real link
		// would have stood still meanwhile, so shift what is queued behind.
		// Below a few milliseconds it is the cost of a copy or a scheduling
		// hiccup, not a stall.
		if took := end.Sub(start); took > pauseThreshold {
			s.model.pause(took)
			for i := range s.q {
				s.q[i].arrive = s.q[i].arrive.Add(took)
			}
		}
		s.broadcast()
		s.mu.Unlock()
	}
}

// stop ends delivery with err, dropping the queue.
func (s *shaped) stop(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.q); n > 0 {
		slog.Warn("transport: shaped link dropped queued messages", "messages", n, "bytes", s.queuedB, "reason", err)
	}
	s.deliverErr = err
	s.q = nil
	s.queuedB = 0
	s.broadcast()
}

func (s *shaped) Recv(ctx context.Context) ([]byte, error) {
	if s.closing.Err() != nil {
		return nil, ErrClosed
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	msg, err := s.inner.Recv(rctx)
	if err != nil && s.closing.Err() != nil {
		return nil, ErrClosed
	}
	return msg, err
}

func (s *shaped) Close() error {
	first := false
	s.closeOnce.Do(func() {
		first = true
		s.mu.Lock()
		s.closed = true
		s.broadcast()
		s.mu.Unlock()
		s.stopRecv()

		if s.opts.CloseGrace < 0 {
			s.abort()
		} else {
			t := time.NewTimer(s.opts.CloseGrace)
			select {
			case <-s.done:
			case <-t.C:
				s.abort()
			}
			t.Stop()
		}
		<-s.done
		s.abort() // release the context's resources
		if err := s.inner.Close(); err != nil {
			s.closeErr = fmt.Errorf("transport: closing shaped link's inner conn: %w", err)
		}
	})
	if !first {
		return nil
	}
	return s.closeErr
}

func (s *shaped) Stats() Stats {
	st := s.inner.Stats()
	s.mu.Lock()
	defer s.mu.Unlock()
	st.BytesSent = s.sent
	st.MessagesSent = s.sentMsgs
	st.SendBlocked = s.blocked
	st.Queued = s.inQueue
	// The link's round trip as a peer would measure it: the inner one plus
	// this profile's latency each way (the other end shapes the way back,
	// with the same profile in narrowband's runs).
	st.RTT += 2 * s.latency
	return st
}
