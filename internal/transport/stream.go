package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Stream turns a byte stream (a TCP or Unix socket between two processes)
// into a Conn: each message is a 4-byte little-endian length and the bytes.
// Send copies the message into a bounded queue (StreamBuffer bytes) that a
// writer goroutine drains into the socket, so a Send that gives up on its
// context never leaves half a message on the wire; a reader goroutine moves
// whole messages into a small queue for Recv. The kernel's socket buffers
// and the queue give back-pressure. candidate is what Stats reports ("host"
// for a direct socket).
func Stream(c net.Conn, candidate string) Conn {
	s := &stream{c: c, candidate: candidate, in: make(chan []byte, 8), done: make(chan struct{}),
		changed: make(chan struct{}), wdone: make(chan struct{})}
	go s.read()
	go s.write()
	return s
}

// StreamBuffer is how many bytes a Stream queues before Send blocks.
const StreamBuffer = 4 << 20

// streamCloseGrace bounds how long Close lets queued messages drain.
const streamCloseGrace = 2 * time.Second

type stream struct {
	c         net.Conn
	candidate string
	in        chan []byte
	rerr      error // set before in is closed
	done      chan struct{}
	closeOnce sync.Once
	closed    atomic.Bool

	mu      sync.Mutex
	q       [][]byte
	qBytes  int
	wclosed bool          // no more sends: the writer exits once q is empty
	werr    error         // the writer failed: sends fail too
	changed chan struct{} // closed and replaced on every change of q
	wdone   chan struct{}

	sentB, recvB, sentM, recvM atomic.Uint64
	blocked                    atomic.Int64
}

func (s *stream) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// write drains the queue into the socket, one message at a time.
func (s *stream) write() {
	defer close(s.wdone)
	var hdr [4]byte
	for {
		s.mu.Lock()
		for len(s.q) == 0 && !s.wclosed {
			ch := s.changed
			s.mu.Unlock()
			<-ch
			s.mu.Lock()
		}
		if len(s.q) == 0 {
			s.mu.Unlock()
			return
		}
		msg := s.q[0]
		s.mu.Unlock()
		binary.LittleEndian.PutUint32(hdr[:], uint32(len(msg)))
		bufs := net.Buffers{hdr[:], msg}
		_, err := bufs.WriteTo(s.c)
		s.mu.Lock()
		s.q = s.q[1:]
		s.qBytes -= len(msg)
		if err != nil {
			s.werr = fmt.Errorf("transport: stream write: %w", err)
			s.q, s.qBytes = nil, 0
		}
		s.broadcast()
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (s *stream) read() {
	defer close(s.in)
	r := bufio.NewReaderSize(s.c, 64<<10)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				s.rerr = io.EOF
			} else {
				s.rerr = fmt.Errorf("transport: stream read: %w", err)
			}
			return
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		if n > MaxMessage {
			s.rerr = fmt.Errorf("transport: stream: peer announced a %d-byte message, over MaxMessage (%d): %w", n, MaxMessage, ErrTooLarge)
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			s.rerr = fmt.Errorf("transport: stream: message cut short after its header: %w", err)
			return
		}
		select {
		case s.in <- msg:
		case <-s.done:
			return
		}
	}
}

func (s *stream) Send(ctx context.Context, msg []byte) error {
	if len(msg) > MaxMessage {
		return ErrTooLarge
	}
	cp := append([]byte(nil), msg...)
	s.mu.Lock()
	defer s.mu.Unlock()
	blocked, err := waitForRoom(ctx, &s.mu, func() chan struct{} { return s.changed },
		func() bool { return s.qBytes > 0 && s.qBytes+len(cp) > StreamBuffer },
		func() error {
			switch {
			case s.wclosed:
				return ErrClosed
			case s.werr != nil:
				return s.werr
			}
			return nil
		})
	s.blocked.Add(int64(blocked))
	if err != nil {
		return err
	}
	s.q = append(s.q, cp)
	s.qBytes += len(cp)
	s.broadcast()
	s.sentB.Add(uint64(len(msg)))
	s.sentM.Add(1)
	return nil
}

func (s *stream) Recv(ctx context.Context) ([]byte, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	select {
	case msg, ok := <-s.in:
		if !ok {
			if s.closed.Load() {
				return nil, ErrClosed
			}
			return nil, s.rerr
		}
		s.recvB.Add(uint64(len(msg)))
		s.recvM.Add(1)
		return msg, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrClosed
	}
}

// Close stops this end at once (its blocked Sends and Recvs return
// ErrClosed) and lets messages already accepted by Send drain to the peer
// for up to two seconds, then closes the socket; the peer then sees io.EOF.
func (s *stream) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		s.mu.Lock()
		s.wclosed = true
		s.broadcast()
		s.mu.Unlock()
		select {
		case <-s.wdone:
		case <-time.After(streamCloseGrace):
		}
		if tc, ok := s.c.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
		s.c.Close()
		<-s.wdone
	})
	return nil
}

func (s *stream) Stats() Stats {
	return Stats{
		BytesSent: s.sentB.Load(), BytesReceived: s.recvB.Load(),
		MessagesSent: s.sentM.Load(), MessagesReceived: s.recvM.Load(),
		SendBlocked: time.Duration(s.blocked.Load()), Candidate: s.candidate,
	}
}
