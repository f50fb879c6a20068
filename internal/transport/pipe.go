package transport

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
)

// DefaultPipeBuffer is the send buffer of a Pipe when PipeOptions leaves it
// zero: large enough for a few 1 MiB activation frames in flight, small
// enough that a stalled receiver stops its sender quickly.
const DefaultPipeBuffer = 4 << 20

// PipeOptions configures Pipe.
type PipeOptions struct {
	// BufferBytes is how many unread bytes one direction holds before Send
	// blocks (back-pressure). A single message larger than the buffer is
	// still accepted when the buffer is empty, so no message size deadlocks.
	// 0 means DefaultPipeBuffer.
	BufferBytes int
}

// Validate reports a negative buffer size.
func (o PipeOptions) Validate() error {
	if o.BufferBytes < 0 {
		return fmt.Errorf("transport: PipeOptions.BufferBytes = %d; use 0 for the default (%d) or a positive byte count", o.BufferBytes, DefaultPipeBuffer)
	}
	return nil
}

// Pipe returns two connected in-process ends: what a sends, b receives, and
// the reverse. Messages are copied on Send, so callers may reuse their
// slices. No goroutine is started; a Pipe costs nothing once both ends are
// closed. A negative BufferBytes is treated as 0 (use Validate to reject it).
func Pipe(opts PipeOptions) (a, b Conn) {
	buf := opts.BufferBytes
	if buf <= 0 {
		buf = DefaultPipeBuffer
	}
	p := &pipe{changed: make(chan struct{})}
	ab := &pipeDir{capacity: buf}
	ba := &pipeDir{capacity: buf}
	ea := &pipeEnd{p: p, out: ab, in: ba}
	eb := &pipeEnd{p: p, out: ba, in: ab}
	return ea, eb
}

// pipe is the state both ends share. One mutex guards everything; waiters
// sleep on changed, a channel closed (and replaced) on every state change,
// so any number of blocked Sends and Recvs can also watch their ctx.
type pipe struct {
	mu      sync.Mutex
	changed chan struct{}
}

// broadcast wakes every waiter; p.mu must be held.
func (p *pipe) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// pipeDir is one direction of a pipe.
type pipeDir struct {
	q        [][]byte
	unread   int  // bytes in q
	capacity int  // back-pressure threshold in bytes
	wclosed  bool // writer closed: reader gets io.EOF after draining
	rclosed  bool // reader closed: writer gets ErrPeerClosed
}

type pipeEnd struct {
	p       *pipe
	out, in *pipeDir
	closed  bool
	stats   Stats // guarded by p.mu
}

func (e *pipeEnd) Send(ctx context.Context, msg []byte) error {
	if len(msg) > MaxMessage {
		return fmt.Errorf("transport: pipe send of %d bytes (limit %d): %w", len(msg), MaxMessage, ErrTooLarge)
	}
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	d := e.out
	blocked, err := waitForRoom(ctx, &p.mu, func() chan struct{} { return p.changed },
		func() bool { return d.unread > 0 && d.unread+len(msg) > d.capacity },
		func() error {
			switch {
			case e.closed:
				return ErrClosed
			case d.rclosed:
				return ErrPeerClosed
			}
			return nil
		})
	e.stats.SendBlocked += blocked
	if err != nil {
		return err
	}
	d.q = append(d.q, bytes.Clone(msg))
	d.unread += len(msg)
	e.stats.BytesSent += uint64(len(msg))
	e.stats.MessagesSent++
	p.broadcast()
	return nil
}

func (e *pipeEnd) Recv(ctx context.Context) ([]byte, error) {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if e.closed {
			return nil, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d := e.in
		if len(d.q) > 0 {
			msg := d.q[0]
			d.q[0] = nil // let the GC have it once the caller drops it
			d.q = d.q[1:]
			if len(d.q) == 0 {
				d.q = nil // reuse nothing, keep no stale backing array
			}
			d.unread -= len(msg)
			e.stats.BytesReceived += uint64(len(msg))
			e.stats.MessagesReceived++
			p.broadcast()
			return msg, nil
		}
		if d.wclosed {
			return nil, io.EOF
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		p.mu.Lock()
	}
}

// Close is graceful for what this end sent (the peer drains it, then sees
// io.EOF) and discards what this end had not yet read.
func (e *pipeEnd) Close() error {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	e.out.wclosed = true
	e.in.rclosed = true
	e.in.q = nil
	e.in.unread = 0
	p.broadcast()
	return nil
}

func (e *pipeEnd) Stats() Stats {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	s := e.stats
	s.Candidate = "inproc"
	return s
}
