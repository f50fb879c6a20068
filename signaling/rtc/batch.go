//go:build !js

package rtc

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
)

// batchConn is the ICE host socket with segmentation offload: on a path of
// 1191-byte SCTP packets (pion's fixed MTU) the per-datagram cost of the
// kernel's UDP path, one sendto and one recvfrom each, was a quarter of the
// CPU both peers spent per megabyte. Writes are queued and sent by one
// flusher goroutine, which hands the kernel each run of equal-sized
// datagrams to one address as a single GSO send (UDP_SEGMENT); reads ask
// for GRO (UDP_GRO), so such a run can arrive as one buffer that
// ReadFromAddrPort splits again. On the wire nothing changes: the kernel
// (or the NIC) cuts the same datagrams, so a browser or any other peer sees
// ordinary UDP.
//
// The queue batches by itself: the flusher takes everything queued since
// its last send, so while pion's SCTP write loop produces a burst the
// flusher is busy with the previous one, and a lone packet (a STUN check,
// a SACK) goes out at once. Writes block while maxQueued bytes wait, which
// passes the kernel's back-pressure on to SCTP as a plain socket does.
//
// It implements ice.AddrPortReaderWriter, which pion's UDP mux uses for its
// reads and writes, and net.PacketConn for the rest.
type batchConn struct {
	*net.UDPConn
	batching bool        // writes go through the queue (fixed at creation)
	gso      atomic.Bool // send runs with UDP_SEGMENT; cleared if the kernel refuses
	ctrl     []byte      // the flusher's control message buffer

	mu      sync.Mutex
	ready   *sync.Cond // the flusher waits for packets
	space   *sync.Cond // writers wait for room
	queue   *outBatch  // filled by writers
	spare   *outBatch  // being sent by the flusher
	closed  bool
	sendErr error // a send error the flusher could not retry (reported once)
	done    chan struct{}

	rmu     sync.Mutex
	rbuf    []byte // one GRO read: up to 64 KiB of segments
	oob     []byte
	pending []byte // segments of rbuf not handed out yet
	segSize int
	from    netip.AddrPort

	stats batchStats
}

// batchStats counts what the batching achieved (for tests and tuning).
type batchStats struct {
	packets, sends, reads, segmentsRead atomic.Uint64
}

// outBatch is packets stored back to back, so that a run of them is one
// contiguous buffer for a GSO send.
type outBatch struct {
	buf  []byte
	pkts []outPacket
}

type outPacket struct {
	off, n int
	to     netip.AddrPort
}

const (
	// maxQueued bounds the bytes waiting for the flusher.
	maxQueued = 1 << 20
	// maxGSOSegments and maxGSOBytes bound one GSO send (the kernel's
	// limits are 64 segments on older kernels and 64 KiB per datagram).
	maxGSOSegments = 64
	maxGSOBytes    = 65000
	// lingerYields and lingerPackets bound how long the flusher waits for
	// a burst to grow before sending it.
	lingerYields  = 16
	lingerPackets = 32
	// groReadSize holds the largest datagram GRO may deliver.
	groReadSize = 65535 + 1
)

// newBatchConn wraps udp. Without offload (offload false, or a kernel
// that has none) it batches nothing and behaves as udp.
func newBatchConn(udp *net.UDPConn, offload bool) *batchConn {
	c := &batchConn{
		UDPConn: udp,
		// The queues grow to what the link needs (maxQueued at most) and
		// keep that size; starting small keeps set-up cheap.
		queue: &outBatch{buf: make([]byte, 0, 64<<10)},
		spare: &outBatch{buf: make([]byte, 0, 64<<10)},
		done:  make(chan struct{}),
	}
	c.ready = sync.NewCond(&c.mu)
	c.space = sync.NewCond(&c.mu)
	gso, gro := false, false
	if offload {
		gso, gro = enableOffload(udp)
	}
	if gro {
		c.rbuf = make([]byte, groReadSize)
		c.oob = make([]byte, oobSize)
	}
	if gso {
		c.batching = true
		c.gso.Store(true)
		c.ctrl = make([]byte, oobSize)
		go c.flushLoop()
	} else {
		close(c.done)
	}
	return c
}

// WriteToAddrPort queues b for addr. It reports errors only for a closed
// socket or one whose earlier send failed in a way a retry cannot fix;
// like any UDP send, a queued datagram may still be lost.
func (c *batchConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if !c.batching {
		return c.UDPConn.WriteToUDPAddrPort(b, addr)
	}
	if len(b) > maxQueued {
		return 0, fmt.Errorf("rtc: datagram of %d bytes is larger than the send queue", len(b))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && len(c.queue.buf)+len(b) > maxQueued {
		c.space.Wait()
	}
	if c.closed {
		return 0, net.ErrClosed
	}
	if err := c.sendErr; err != nil {
		c.sendErr = nil
		return 0, err
	}
	q := c.queue
	q.pkts = append(q.pkts, outPacket{off: len(q.buf), n: len(b), to: addr})
	q.buf = append(q.buf, b...)
	if len(q.pkts) == 1 {
		c.ready.Signal()
	}
	return len(b), nil
}

// WriteTo implements net.PacketConn.
func (c *batchConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("rtc: write to %v: not a UDP address", addr)
	}
	ap := ua.AddrPort()
	return c.WriteToAddrPort(b, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// flushLoop sends what writers queued until the socket closes, then sends
// what is left.
func (c *batchConn) flushLoop() {
	defer close(c.done)
	for {
		c.mu.Lock()
		for len(c.queue.pkts) == 0 && !c.closed {
			c.ready.Wait()
		}
		// Linger a moment while a burst is still being written: on an
		// idle machine the flusher outpaces pion's write loop and would
		// send runs of one or two. A few yields (microseconds; nothing
		// next to a network round trip) let the run grow.
		for k := 0; k < lingerYields && len(c.queue.pkts) < lingerPackets && !c.closed; k++ {
			n := len(c.queue.pkts)
			c.mu.Unlock()
			runtime.Gosched()
			c.mu.Lock()
			if len(c.queue.pkts) == n {
				break // nothing came: a lone packet, or the burst is over
			}
		}
		if len(c.queue.pkts) == 0 {
			c.mu.Unlock()
			return
		}
		b := c.queue
		c.queue, c.spare = c.spare, b
		c.space.Broadcast()
		c.mu.Unlock()

		err := c.send(b)
		b.buf, b.pkts = b.buf[:0], b.pkts[:0]
		if err != nil {
			c.mu.Lock()
			c.sendErr = err
			c.mu.Unlock()
		}
	}
}

// send writes one batch, a GSO send per run of equal-sized datagrams to one
// address (the last of a run may be shorter, as GSO allows).
func (c *batchConn) send(b *outBatch) error {
	var firstErr error
	for i := 0; i < len(b.pkts); {
		p := b.pkts[i]
		j, total := i+1, p.n
		for j < len(b.pkts) && j-i < maxGSOSegments && c.gso.Load() {
			q := b.pkts[j]
			if q.to != p.to || q.n > p.n || total+q.n > maxGSOBytes {
				break
			}
			total += q.n
			j++
			if q.n < p.n {
				break // a short datagram ends a run
			}
		}
		c.stats.packets.Add(uint64(j - i))
		c.stats.sends.Add(1)
		run := b.buf[p.off : p.off+total]
		var err error
		if j-i > 1 {
			_, _, err = c.UDPConn.WriteMsgUDPAddrPort(run, gsoControl(c.ctrl, p.n), p.to)
			if err != nil && gsoRefused(err) {
				// This path cannot offload (e.g. no checksum offload on
				// the device): send singly from now on.
				c.gso.Store(false)
				for k := i; k < j; k++ {
					q := b.pkts[k]
					_, err = c.UDPConn.WriteToUDPAddrPort(b.buf[q.off:q.off+q.n], q.to)
				}
			}
		} else {
			_, err = c.UDPConn.WriteToUDPAddrPort(run, p.to)
		}
		if err != nil && firstErr == nil && !transientSendError(err) {
			firstErr = err
		}
		i = j
	}
	return firstErr
}

// ReadFromAddrPort returns the next datagram, splitting a GRO read into the
// datagrams it was made of.
func (c *batchConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	if c.rbuf == nil {
		return c.UDPConn.ReadFromUDPAddrPort(b)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(c.pending) == 0 {
		n, oobn, _, from, err := c.UDPConn.ReadMsgUDPAddrPort(c.rbuf, c.oob)
		if err != nil {
			return 0, from, err
		}
		c.stats.reads.Add(1)
		c.pending, c.from = c.rbuf[:n], from
		c.segSize = groSegmentSize(c.oob[:oobn])
		if c.segSize <= 0 || c.segSize > n {
			c.segSize = n
		}
	}
	seg := c.pending[:min(c.segSize, len(c.pending))]
	c.pending = c.pending[len(seg):]
	c.stats.segmentsRead.Add(1)
	// A datagram longer than b is cut, as a plain UDP read cuts it: an
	// error here would end pion's mux and with it the link.
	return copy(b, seg), c.from, nil
}

// ReadFrom implements net.PacketConn.
func (c *batchConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromAddrPort(b)
	if !from.IsValid() {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), err
}

// Close sends what is queued, then closes the socket.
func (c *batchConn) Close() error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.ready.Broadcast()
	c.space.Broadcast()
	c.mu.Unlock()
	<-c.done
	if already {
		return nil
	}
	return c.UDPConn.Close()
}

// transientSendError is an error after which later sends may succeed: a full
// socket buffer or an unreachable peer (ICMP) is what UDP is allowed to lose.
func transientSendError(err error) bool {
	return !errors.Is(err, net.ErrClosed)
}
