package transport

import (
	"context"
	"errors"
	"time"
)

// MaxMessage bounds one message on any transport. Activations for one
// micro-batch at d=4096 and 2k tokens are 32 MiB in fp32; anything larger is
// a bug or an attack.
const MaxMessage = 64 << 20

// ErrClosed is returned by Send and Recv on a Conn that this side closed.
var ErrClosed = errors.New("transport: connection closed (the link was shut down; reconnect or restart the peer)")

// ErrTooLarge is returned by Send for a message over MaxMessage.
var ErrTooLarge = errors.New("transport: message over transport.MaxMessage")

// ErrPeerClosed is returned by Send when the implementation knows the other
// end has closed, so the message could never be read. Not every transport
// can tell (a network peer may vanish silently); callers must not rely on
// getting it, only on not getting it while the peer is alive.
var ErrPeerClosed = errors.New("transport: peer closed the connection (the other stage shut down or restarted; reconnect)")

// Conn is one end of a reliable, ordered, message-oriented link between two
// peers. Messages are opaque byte slices (frames from package wire); message
// boundaries and order are preserved.
//
// Send and Recv may be called concurrently with each other (one sender
// goroutine and one receiver goroutine); concurrent Sends or concurrent Recvs
// are not required to be safe.
type Conn interface {
	// Send queues msg for delivery. The caller may reuse msg once Send
	// returns. Send blocks only while the link's send buffer is full
	// (back-pressure), until there is room, ctx is done or the Conn closes.
	// A Send that returns an error did not queue msg: it is never delivered,
	// so a caller may retry without creating a duplicate.
	Send(ctx context.Context, msg []byte) error
	// Recv returns the next message; the slice belongs to the caller. Once
	// the other end has closed and every message it sent was delivered, Recv
	// returns io.EOF (and keeps returning it). A Recv cancelled through ctx
	// returns ctx's error and consumes no message.
	Recv(ctx context.Context) ([]byte, error)
	// Close shuts this end down; blocked Send and Recv return ErrClosed, and
	// so do later calls. Messages whose Send returned nil before Close are
	// still delivered to the peer (a graceful close, like a socket's FIN),
	// and the peer then sees io.EOF. Close is idempotent: later calls
	// return nil.
	Close() error
	// Stats reports this end's counters so far.
	Stats() Stats
}

// Stats are the counters of one end of a link.
type Stats struct {
	BytesSent        uint64 // payload bytes handed to Send and accepted
	BytesReceived    uint64 // payload bytes returned by Recv
	MessagesSent     uint64
	MessagesReceived uint64
	// SendBlocked is the total time Send spent waiting for buffer room.
	SendBlocked time.Duration
	// Candidate is the kind of path the link uses: "inproc", "host",
	// "srflx", "prflx" or "relay".
	Candidate string
	// RTT is the latest measured round-trip time, 0 if unknown.
	RTT time.Duration
	// Queued is the total time messages spent between Send and being handed
	// to the underlying link inside a shaper (see Shape): serialization at
	// the shaped bandwidth, latency, jitter and retransmission delays. Zero
	// for unshaped transports.
	Queued time.Duration
}
