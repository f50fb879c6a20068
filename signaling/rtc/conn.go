//go:build !js

package rtc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/signaling"
)

// Conn is one end of a WebRTC data-channel link. It implements
// transport.Conn.
type Conn struct {
	cfg    Config
	remote string
	pc     *webrtc.PeerConnection
	dc     *webrtc.DataChannel
	rwc    datachannel.ReadWriteCloser
	mux    ice.UDPMux
	udp    *batchConn

	sendMu  sync.Mutex // one message's chunks at a time (Send vs Close's FIN)
	sendBuf []byte
	low     chan struct{} // signalled when the buffered amount falls low

	// sigs is the signaling mailbox from the remote, emptied on Close so a
	// later Connect to the same peer does not see this session's leftovers.
	sigs <-chan signaling.Message

	q          *recvQueue
	readerDone chan struct{}

	closing   chan struct{} // closed first by Close: unblocks Send and Recv
	closeOnce sync.Once

	bytesSent, bytesRecv, msgsSent, msgsRecv atomic.Uint64
	sendBlocked                              atomic.Int64
	candidate                                atomic.Value // string
	rtt                                      atomic.Int64
	lost                                     atomic.Value // error: why the link died, if ICE said so
}

var _ transport.Conn = (*Conn)(nil)

// newConn wraps an open, detached data channel and starts its reader.
func newConn(cfg Config, remote string, pc *webrtc.PeerConnection, dc *webrtc.DataChannel, rwc datachannel.ReadWriteCloser, mux ice.UDPMux, udp *batchConn) *Conn {
	c := &Conn{
		cfg: cfg, remote: remote, pc: pc, dc: dc, rwc: rwc, mux: mux, udp: udp,
		sendBuf:    make([]byte, MaxChunk),
		low:        make(chan struct{}, 1),
		q:          newRecvQueue(cfg.RecvBuffer),
		readerDone: make(chan struct{}),
		closing:    make(chan struct{}),
	}
	c.candidate.Store("")
	dc.SetBufferedAmountLowThreshold(uint64(cfg.SendHighWater / 2))
	dc.OnBufferedAmountLow(func() {
		select {
		case c.low <- struct{}{}:
		default:
		}
	})
	c.refreshPath()
	go c.readLoop()
	return c
}

// Remote is the peer ID at the other end.
func (c *Conn) Remote() string { return c.remote }

// Send queues msg, blocking while more than Config.SendHighWater bytes wait
// in the channel's send buffer.
func (c *Conn) Send(ctx context.Context, msg []byte) error {
	if len(msg) > transport.MaxMessage {
		return fmt.Errorf("rtc: send %d bytes to %s: %w", len(msg), c.remote, transport.ErrTooLarge)
	}
	select {
	case <-c.closing:
		return transport.ErrClosed
	default:
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	err := writeChunks(msg, c.sendBuf, func(chunk []byte) error {
		if err := c.waitRoom(ctx); err != nil {
			return err
		}
		if _, err := c.rwc.Write(chunk); err != nil {
			select {
			case <-c.closing:
				return transport.ErrClosed
			default:
			}
			return fmt.Errorf("rtc: send to %s: %w", c.remote, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.bytesSent.Add(uint64(len(msg)))
	c.msgsSent.Add(1)
	return nil
}

// waitRoom blocks while the send buffer is above the high-water mark.
func (c *Conn) waitRoom(ctx context.Context) error {
	if c.dc.BufferedAmount() <= uint64(c.cfg.SendHighWater) {
		return nil
	}
	start := time.Now()
	defer func() { c.sendBlocked.Add(int64(time.Since(start))) }()
	// The low callback may have fired before we looked; poll as a safety net
	// so a missed edge costs milliseconds, not a hang.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for c.dc.BufferedAmount() > uint64(c.cfg.SendHighWater) {
		select {
		case <-c.low:
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closing:
			return transport.ErrClosed
		case <-c.readerDone:
			// The link is gone (peer closed or vanished): the buffer will
			// never drain.
			return c.linkEndedErr()
		}
	}
	return nil
}

// linkEndedErr says why Send cannot go on once the reader has stopped.
func (c *Conn) linkEndedErr() error {
	select {
	case <-c.closing:
		return transport.ErrClosed
	default:
	}
	err := c.q.failure()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("rtc: send to %s: the peer closed the link: %w", c.remote, io.ErrClosedPipe)
	}
	return err // the reader's error already names the link
}

// Recv returns the next message.
func (c *Conn) Recv(ctx context.Context) ([]byte, error) {
	select {
	case <-c.closing:
		return nil, transport.ErrClosed
	default:
	}
	msg, err := c.q.pop(ctx, c.closing)
	if err != nil {
		return nil, err
	}
	c.bytesRecv.Add(uint64(len(msg)))
	c.msgsRecv.Add(1)
	return msg, nil
}

// readLoop takes chunks off the channel until it ends.
func (c *Conn) readLoop() {
	defer close(c.readerDone)
	var r reassembler
	buf := make([]byte, MaxChunk)
	for {
		n, err := c.rwc.Read(buf)
		if err != nil {
			select {
			case <-c.closing:
				c.q.finish(transport.ErrClosed)
			default:
				if lost, ok := c.lost.Load().(error); ok {
					c.q.finish(lost)
				} else {
					c.q.finish(fmt.Errorf("rtc: link to %s lost before it was closed: %w", c.remote, err))
				}
			}
			return
		}
		msg, fin, err := r.feed(buf[:n])
		if err != nil {
			c.q.finish(fmt.Errorf("rtc: link to %s: %w", c.remote, err))
			_ = c.rwc.Close() // the stream is out of step; nothing more to trust
			return
		}
		if fin {
			c.q.finish(io.EOF)
			return
		}
		if msg != nil {
			if err := c.q.push(msg, c.closing); err != nil {
				c.q.finish(err)
				return
			}
		}
	}
}

// Close sends a close marker, waits (up to Config.CloseLinger without
// progress) for sent data to be acknowledged, and tears the link down.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		c.sendMu.Lock() // a blocked Send has now returned
		if _, err := c.rwc.Write([]byte{chunkFin}); err == nil {
			c.linger()
		}
		c.sendMu.Unlock()
		_ = c.rwc.Close()
		_ = c.pc.Close()
		_ = c.mux.Close()
		_ = c.udp.Close()
		<-c.readerDone
		for {
			select {
			case <-c.sigs:
				continue
			default:
			}
			break
		}
	})
	return nil
}

// linger waits until the send buffer is empty, giving up once it has not
// shrunk for Config.CloseLinger (the peer stopped reading or is gone), or
// at once when the reader has ended: the peer has closed its end (its close
// marker arrived) or the link is lost, so nobody will read what is left.
// Without that, the second of two ends to close waited the whole
// CloseLinger for an acknowledgement of its own close marker.
func (c *Conn) linger() {
	last := c.dc.BufferedAmount()
	progress := time.Now()
	for last > 0 && time.Since(progress) < c.cfg.CloseLinger {
		select {
		case <-c.readerDone:
			return
		case <-time.After(2 * time.Millisecond):
		}
		if n := c.dc.BufferedAmount(); n < last {
			last, progress = n, time.Now()
		}
	}
}

// refreshPath records the selected candidate type and the latest RTT.
func (c *Conn) refreshPath() {
	sctp := c.pc.SCTP()
	if sctp == nil || sctp.Transport() == nil {
		return
	}
	it := sctp.Transport().ICETransport()
	if pair, err := it.GetSelectedCandidatePair(); err == nil && pair != nil && pair.Local != nil && pair.Remote != nil {
		c.candidate.Store(pathKind(onLoopback(pair.Local), onLoopback(pair.Remote)))
	}
	if st, ok := it.GetSelectedCandidatePairStats(); ok && st.CurrentRoundTripTime > 0 {
		c.rtt.Store(int64(st.CurrentRoundTripTime * float64(time.Second)))
	}
}

// onLoopback is c's type, except that a peer-reflexive candidate on a
// loopback address is a host one. A check from the other end can arrive
// before its host candidate does through signaling; ICE then learns the
// address from the check and calls it peer-reflexive, though no NAT can
// stand between two ends of 127.0.0.1 — so a loopback link would now and
// then report "prflx" depending on which message won the race.
func onLoopback(c *webrtc.ICECandidate) webrtc.ICECandidateType {
	if c.Typ == webrtc.ICECandidateTypePrflx {
		if ip := net.ParseIP(c.Address); ip != nil && ip.IsLoopback() {
			return webrtc.ICECandidateTypeHost
		}
	}
	return c.Typ
}

// pathKind names the path a candidate pair takes by its least direct end,
// so both ends of a link report the same kind: "relay" if either end sends
// through a TURN relay, else "srflx" or "prflx" if either end is seen
// through a NAT, else "host".
func pathKind(local, remote webrtc.ICECandidateType) string {
	for _, t := range []webrtc.ICECandidateType{webrtc.ICECandidateTypeRelay, webrtc.ICECandidateTypeSrflx, webrtc.ICECandidateTypePrflx} {
		if local == t || remote == t {
			return t.String()
		}
	}
	return local.String()
}

// Stats reports this end's counters, the selected candidate type and RTT.
func (c *Conn) Stats() transport.Stats {
	select {
	case <-c.closing:
	default:
		c.refreshPath()
	}
	return transport.Stats{
		BytesSent:        c.bytesSent.Load(),
		BytesReceived:    c.bytesRecv.Load(),
		MessagesSent:     c.msgsSent.Load(),
		MessagesReceived: c.msgsRecv.Load(),
		SendBlocked:      time.Duration(c.sendBlocked.Load()),
		Candidate:        c.candidate.Load().(string),
		RTT:              time.Duration(c.rtt.Load()),
	}
}
