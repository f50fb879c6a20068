package transporttest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/transport"
)

// subtestTimeout bounds every subtest, so a hung implementation fails with a
// message rather than hitting go test's global timeout.
const subtestTimeout = 2 * time.Minute

// stalledSendTimeout is how long one Send may stay blocked before the suite
// concludes the link pushes back. Generous: a loaded machine may pause a
// healthy sender for a while.
const stalledSendTimeout = 2 * time.Second

// backPressureLimit is how far a sender may run ahead of a receiver that
// never reads before the suite calls the buffer unbounded.
const backPressureLimit = 1 << 30

// Run runs the conformance suite against the pairs newPair makes. See the
// package comment for the lifecycle of the pair.
func Run(t *testing.T, newPair func(t *testing.T) (a, b transport.Conn)) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, a, b transport.Conn)
	}{
		{"Ordering", testOrdering},
		{"Boundaries", testBoundaries},
		{"LargeMessages", testLargeMessages},
		{"TooLarge", testTooLarge},
		{"CloseDrains", testCloseDrains},
		{"CloseOwnSide", testCloseOwnSide},
		{"CloseUnblocksRecv", testCloseUnblocksRecv},
		{"ContextCancel", testContextCancel},
		{"BackPressure", testBackPressure},
		{"CloseUnblocksSend", testCloseUnblocksSend},
		{"Stats", testStats},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := goroutineSnapshot()
			// Registered first, so it runs last: after Run closes the pair
			// and after newPair's own cleanups.
			t.Cleanup(func() { checkNoLeaks(t, before) })
			a, b := newPair(t)
			if a == nil || b == nil {
				t.Fatalf("newPair returned a nil Conn (a=%v, b=%v)", a, b)
			}
			t.Cleanup(func() {
				if err := a.Close(); err != nil {
					t.Errorf("closing end a: %v", err)
				}
				if err := b.Close(); err != nil {
					t.Errorf("closing end b: %v", err)
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), subtestTimeout)
			defer cancel()
			c.fn(t, ctx, a, b)
		})
	}
}

// callLimit bounds a single Send or Recv the suite makes from the test
// goroutine, beyond any ctx deadline it passes.
const callLimit = 15 * time.Second

// recvWithin calls c.Recv and fails t if it has not returned within
// callLimit, so an implementation that ignores ctx or Close fails instead
// of hanging the suite. The stuck goroutine is left behind; closing the
// pair usually releases it.
func recvWithin(t *testing.T, ctx context.Context, c transport.Conn) ([]byte, error) {
	t.Helper()
	type result struct {
		msg []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		msg, err := c.Recv(ctx)
		res <- result{msg, err}
	}()
	select {
	case r := <-res:
		return r.msg, r.err
	case <-time.After(callLimit):
		t.Fatalf("Recv did not return within %v (does it honour ctx and Close?)", callLimit)
		return nil, nil
	}
}

// sendWithin is recvWithin for Send.
func sendWithin(t *testing.T, ctx context.Context, c transport.Conn, msg []byte) error {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- c.Send(ctx, msg) }()
	select {
	case err := <-res:
		return err
	case <-time.After(callLimit):
		t.Fatalf("Send of %d bytes did not return within %v (does it honour ctx and Close?)", len(msg), callLimit)
		return nil
	}
}

// payload returns size deterministic bytes for message seq of stream id, so
// a receiver can check content, order and boundaries without a copy of what
// was sent.
func payload(stream, seq uint64, size int) []byte {
	p := make([]byte, size)
	fillPayload(p, stream, seq)
	return p
}

func fillPayload(p []byte, stream, seq uint64) {
	x := stream*0x9E3779B97F4A7C15 ^ seq*0xBF58476D1CE4E5B9 ^ uint64(len(p))
	if x == 0 {
		x = 1
	}
	var w [8]byte
	for i := 0; i < len(p); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(w[:], x)
		copy(p[i:], w[:])
	}
}

// checkPayload reports how got differs from message seq of stream.
func checkPayload(got []byte, stream, seq uint64, size int) error {
	if len(got) != size {
		return fmt.Errorf("message %d of stream %d: got %d bytes, want %d (message boundaries or order broken)", seq, stream, len(got), size)
	}
	want := payload(stream, seq, size)
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		return fmt.Errorf("message %d of stream %d (%d bytes): content differs from byte %d on (reordered, corrupted or aliased)", seq, stream, size, i)
	}
	return nil
}

// sendAll sends the messages sizes describes on c and reports the first
// failure on errc (nil on success).
func sendAll(ctx context.Context, c transport.Conn, stream uint64, sizes []int, errc chan<- error) {
	for i, n := range sizes {
		if err := c.Send(ctx, payload(stream, uint64(i), n)); err != nil {
			errc <- fmt.Errorf("send message %d of stream %d (%d bytes): %w", i, stream, n, err)
			return
		}
	}
	errc <- nil
}

// recvAll receives len(sizes) messages on c and checks each one.
func recvAll(ctx context.Context, c transport.Conn, stream uint64, sizes []int, errc chan<- error) {
	for i, n := range sizes {
		got, err := c.Recv(ctx)
		if err != nil {
			errc <- fmt.Errorf("recv message %d of %d of stream %d: %w", i, len(sizes), stream, err)
			return
		}
		if err := checkPayload(got, stream, uint64(i), n); err != nil {
			errc <- err
			return
		}
	}
	errc <- nil
}

// wait collects n results from errc, failing the test on each error. On
// the first error it cancels the goroutines' ctx, so a receiver that gave up
// does not leave its sender blocked until the subtest times out; errors
// that are only the echo of that cancellation are not reported.
func wait(t *testing.T, ctx context.Context, cancel context.CancelFunc, errc <-chan error, n int) {
	t.Helper()
	failed := false
	for range n {
		select {
		case err := <-errc:
			if err == nil || (failed && errors.Is(err, context.Canceled)) {
				continue
			}
			t.Error(err)
			failed = true
			cancel()
		case <-ctx.Done():
			if !failed {
				t.Fatalf("timed out after %v waiting for senders and receivers: %v", subtestTimeout, ctx.Err())
			}
		}
	}
}

// group returns a cancellable child of ctx for one batch of sender and
// receiver goroutines, and the channel they report on.
func group(ctx context.Context) (context.Context, context.CancelFunc, chan error) {
	ctx, cancel := context.WithCancel(ctx)
	return ctx, cancel, make(chan error, 4)
}

// testOrdering pushes many messages of varied sizes both ways at once, with
// one sender and one receiver goroutine on each end, as the runtime does.
func testOrdering(t *testing.T, ctx context.Context, a, b transport.Conn) {
	const n = 1000
	sizes := make([]int, n)
	for i := range sizes {
		sizes[i] = (i * 7919) % 20011 // 0 … 20 KB, a few empty
	}
	ctx, cancel, errc := group(ctx)
	defer cancel()
	go sendAll(ctx, a, 1, sizes, errc)
	go recvAll(ctx, b, 1, sizes, errc)
	go sendAll(ctx, b, 2, sizes, errc)
	go recvAll(ctx, a, 2, sizes, errc)
	wait(t, ctx, cancel, errc, 4)
}

// testBoundaries checks that tiny and packet-edge sizes arrive as sent, and
// that Send copies: the sender overwrites its buffer right after each Send.
func testBoundaries(t *testing.T, ctx context.Context, a, b transport.Conn) {
	sizes := []int{0, 1, 2, 3, 7, 8, 9, 0, 0, 1, 1199, 1200, 1201, 16383, 16384, 16385, 65535, 65536, 65537, 0, 1}
	ctx, cancel, errc := group(ctx)
	defer cancel()
	go func() {
		buf := make([]byte, 0, 1<<17)
		for i, n := range sizes {
			buf = buf[:n]
			fillPayload(buf, 3, uint64(i))
			if err := a.Send(ctx, buf); err != nil {
				errc <- fmt.Errorf("send message %d (%d bytes): %w", i, n, err)
				return
			}
			for j := range buf {
				buf[j] = 0xA5 // the transport must have copied already
			}
		}
		errc <- nil
	}()
	go recvAll(ctx, b, 3, sizes, errc)
	wait(t, ctx, cancel, errc, 2)
}

// testLargeMessages sends 16 MiB tensors-sized messages and checks them.
func testLargeMessages(t *testing.T, ctx context.Context, a, b transport.Conn) {
	sizes := []int{16 << 20, 16<<20 - 1, 5, 16 << 20}
	ctx, cancel, errc := group(ctx)
	defer cancel()
	go sendAll(ctx, a, 4, sizes, errc)
	go recvAll(ctx, b, 4, sizes, errc)
	wait(t, ctx, cancel, errc, 2)
}

// testTooLarge checks that an oversized message is refused with ErrTooLarge
// and leaves the link usable.
func testTooLarge(t *testing.T, ctx context.Context, a, b transport.Conn) {
	err := sendWithin(t, ctx, a, make([]byte, transport.MaxMessage+1))
	if !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("Send of MaxMessage+1 bytes: got %v, want an error wrapping transport.ErrTooLarge", err)
	}
	ctx, cancel, errc := group(ctx)
	defer cancel()
	sizes := []int{10}
	go sendAll(ctx, a, 5, sizes, errc)
	go recvAll(ctx, b, 5, sizes, errc)
	wait(t, ctx, cancel, errc, 2)
	if s := a.Stats(); s.MessagesSent != 1 || s.BytesSent != 10 {
		t.Errorf("after a refused oversize Send and one 10-byte message: MessagesSent=%d BytesSent=%d, want 1 and 10", s.MessagesSent, s.BytesSent)
	}
}

// testCloseDrains: everything sent before Close reaches the peer, which
// then sees io.EOF, and keeps seeing it.
func testCloseDrains(t *testing.T, ctx context.Context, a, b transport.Conn) {
	sizes := make([]int, 50)
	for i := range sizes {
		sizes[i] = 1 + i*997
	}
	ctx, cancel, errc := group(ctx)
	defer cancel()
	go func() {
		for i, n := range sizes {
			if err := a.Send(ctx, payload(6, uint64(i), n)); err != nil {
				errc <- fmt.Errorf("send message %d: %w", i, err)
				return
			}
		}
		if err := a.Close(); err != nil {
			errc <- fmt.Errorf("Close after sending: %w", err)
			return
		}
		errc <- nil
	}()
	go recvAll(ctx, b, 6, sizes, errc)
	wait(t, ctx, cancel, errc, 2)
	for i := range 2 {
		msg, err := recvWithin(t, ctx, b)
		if err != io.EOF {
			t.Fatalf("Recv #%d after the peer closed and everything was delivered: got (%d bytes, %v), want io.EOF", i+1, len(msg), err)
		}
	}
}

// testCloseOwnSide: after Close, this end's calls fail with ErrClosed and a
// second Close is a no-op.
func testCloseOwnSide(t *testing.T, ctx context.Context, a, b transport.Conn) {
	if err := a.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil (Close is idempotent)", err)
	}
	if err := sendWithin(t, ctx, a, []byte("late")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Send after Close: got %v, want transport.ErrClosed", err)
	}
	if msg, err := recvWithin(t, ctx, a); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Recv after Close: got (%d bytes, %v), want transport.ErrClosed", len(msg), err)
	}
	if msg, err := recvWithin(t, ctx, b); err != io.EOF {
		t.Errorf("peer Recv after Close with nothing sent: got (%d bytes, %v), want io.EOF", len(msg), err)
	}
}

// testCloseUnblocksRecv: a Recv blocked on an idle link returns ErrClosed
// when its own end closes.
func testCloseUnblocksRecv(t *testing.T, ctx context.Context, a, b transport.Conn) {
	res := make(chan error, 1)
	go func() {
		_, err := a.Recv(ctx)
		res <- err
	}()
	time.Sleep(50 * time.Millisecond) // let Recv block; the result is the same if it has not yet
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-res:
		if !errors.Is(err, transport.ErrClosed) {
			t.Errorf("blocked Recv after own Close: got %v, want transport.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Recv still blocked 10 s after its own end closed")
	}
}

// testContextCancel: a blocked Recv returns ctx's error on deadline and on
// cancel, consumes nothing, and the link still works afterwards.
func testContextCancel(t *testing.T, ctx context.Context, a, b transport.Conn) {
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	start := time.Now()
	msg, err := recvWithin(t, dctx, b)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv on an idle link with a 50 ms deadline: got (%d bytes, %v), want context.DeadlineExceeded", len(msg), err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Recv took %v to notice a 50 ms deadline", d)
	}

	cctx, cancel := context.WithCancel(ctx)
	res := make(chan error, 1)
	go func() {
		_, err := b.Recv(cctx)
		res <- err
	}()
	time.Sleep(30 * time.Millisecond)
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Recv after cancel: got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Recv still blocked 10 s after its context was cancelled")
	}

	ctx, cancel, errc := group(ctx)
	defer cancel()
	sizes := []int{100, 0, 3}
	go sendAll(ctx, a, 7, sizes, errc)
	go recvAll(ctx, b, 7, sizes, errc)
	wait(t, ctx, cancel, errc, 2)
}

// fillUntilBlocked sends 1 MiB messages of stream on c until one Send stays
// blocked for stalledSendTimeout and returns how many were accepted. It
// fails the test if the link takes backPressureLimit bytes without pushing
// back or if the blocked Send fails with anything but the deadline.
func fillUntilBlocked(t *testing.T, ctx context.Context, c transport.Conn, stream uint64) int {
	t.Helper()
	const size = 1 << 20
	for i := 0; ; i++ {
		if i*size > backPressureLimit {
			t.Fatalf("Send accepted %d MiB while the receiver read nothing: the send buffer is unbounded (Send must block when it is full)", i)
		}
		sctx, cancel := context.WithTimeout(ctx, stalledSendTimeout)
		err := sendWithin(t, sctx, c, payload(stream, uint64(i), size))
		cancel()
		if err == nil {
			continue
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("blocked Send after %d MiB: got %v, want context.DeadlineExceeded", i, err)
		}
		return i
	}
}

// testBackPressure: a sender cannot run unboundedly ahead of a receiver
// that does not read; the Send that timed out is not delivered; and once
// the receiver reads, everything accepted arrives in order.
func testBackPressure(t *testing.T, ctx context.Context, a, b transport.Conn) {
	accepted := fillUntilBlocked(t, ctx, a, 8)
	if accepted == 0 {
		t.Logf("the link pushed back before accepting one 1 MiB message")
	}
	if s := a.Stats(); s.SendBlocked <= 0 {
		t.Errorf("Stats().SendBlocked = %v after a Send blocked for %v, want > 0", s.SendBlocked, stalledSendTimeout)
	}
	ctx, cancel, errc := group(ctx)
	defer cancel()
	go func() {
		// A marker after the timed-out message: the receiver must see it
		// right after the accepted ones, not the timed-out message.
		errc <- a.Send(ctx, []byte("marker"))
	}()
	go func() {
		for i := range accepted {
			got, err := b.Recv(ctx)
			if err != nil {
				errc <- fmt.Errorf("recv message %d of %d accepted: %w", i, accepted, err)
				return
			}
			if err := checkPayload(got, 8, uint64(i), 1<<20); err != nil {
				errc <- err
				return
			}
		}
		got, err := b.Recv(ctx)
		switch {
		case err != nil:
			errc <- fmt.Errorf("recv marker after %d accepted messages: %w", accepted, err)
		case string(got) != "marker":
			errc <- fmt.Errorf("after the %d accepted messages got a %d-byte message instead of the marker: a Send that returned an error was delivered anyway", accepted, len(got))
		default:
			errc <- nil
		}
	}()
	wait(t, ctx, cancel, errc, 2)
}

// testCloseUnblocksSend: a Send blocked by back-pressure returns ErrClosed
// when its own end closes.
func testCloseUnblocksSend(t *testing.T, ctx context.Context, a, b transport.Conn) {
	fillUntilBlocked(t, ctx, a, 9)
	res := make(chan error, 1)
	go func() {
		msg := make([]byte, 1<<20)
		for {
			if err := a.Send(ctx, msg); err != nil {
				res <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-res:
		if !errors.Is(err, transport.ErrClosed) {
			t.Errorf("Send blocked by back-pressure, after own Close: got %v, want transport.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Send still blocked 10 s after its own end closed")
	}
}

// testStats: the counters match exactly what was sent and received.
func testStats(t *testing.T, ctx context.Context, a, b transport.Conn) {
	for name, c := range map[string]transport.Conn{"a": a, "b": b} {
		s := c.Stats()
		if s.BytesSent != 0 || s.BytesReceived != 0 || s.MessagesSent != 0 || s.MessagesReceived != 0 {
			t.Errorf("end %s of a fresh pair: Stats = %+v, want zero counters (count only the caller's messages)", name, s)
		}
	}
	sizesA := make([]int, 100)
	sumA := 0
	for i := range sizesA {
		sizesA[i] = i * 101
		sumA += sizesA[i]
	}
	sizesB := make([]int, 37)
	sumB := 0
	for i := range sizesB {
		sizesB[i] = 1 + i*i*13
		sumB += sizesB[i]
	}
	ctx, cancel, errc := group(ctx)
	defer cancel()
	go sendAll(ctx, a, 10, sizesA, errc)
	go recvAll(ctx, b, 10, sizesA, errc)
	go sendAll(ctx, b, 11, sizesB, errc)
	go recvAll(ctx, a, 11, sizesB, errc)
	wait(t, ctx, cancel, errc, 4)

	check := func(name string, s transport.Stats, sent, sentBytes, recv, recvBytes int) {
		t.Helper()
		if s.MessagesSent != uint64(sent) || s.BytesSent != uint64(sentBytes) ||
			s.MessagesReceived != uint64(recv) || s.BytesReceived != uint64(recvBytes) {
			t.Errorf("end %s: sent %d msgs/%d B, received %d msgs/%d B; Stats says sent %d/%d B, received %d/%d B",
				name, sent, sentBytes, recv, recvBytes, s.MessagesSent, s.BytesSent, s.MessagesReceived, s.BytesReceived)
		}
		switch s.Candidate {
		case "inproc", "host", "srflx", "prflx", "relay":
		default:
			t.Errorf("end %s: Stats().Candidate = %q, want one of inproc, host, srflx, prflx, relay", name, s.Candidate)
		}
		if s.SendBlocked < 0 || s.RTT < 0 || s.Queued < 0 {
			t.Errorf("end %s: negative duration in Stats %+v", name, s)
		}
	}
	check("a", a.Stats(), len(sizesA), sumA, len(sizesB), sumB)
	check("b", b.Stats(), len(sizesB), sumB, len(sizesA), sumA)
}
