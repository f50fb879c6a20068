//go:build js && wasm

package rtc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"syscall/js"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/signaling"
)

// In a browser the RTCPeerConnection belongs to the page, not to Go: a Web
// Worker (where the wasm peer computes, so the page stays responsive) has
// WebSocket but no RTCPeerConnection. So this build drives peer
// connections that the page owns, through a bridge of two functions the
// worker's JavaScript provides (web/static/nbworker.js):
//
//	nbrtcPost(msg, transfer)   Go → page: {op: "new"|"offer"|"answer"|"remote"|"cand"|"send"|"close", id, …}
//	nbrtcEvent(ev)             page → Go: {ev: "sdp"|"cand"|"open"|"msg"|"ack"|"closed"|"path"|"err", id, …}
//
// Data-channel messages cross as transferred ArrayBuffers (no copy between
// the threads). Everything above the bridge is the native build's: the
// same offer/answer/candidate messages on the same signaling server, the
// same chunk format (frame.go) and the same receive queue, so a tab and a
// `narrowband peer` cannot tell each other apart.

// bridge is the page's half of the peer connections, seen from Go.
type bridge struct {
	post js.Value
	fn   js.Func

	mu    sync.Mutex
	pcs   map[int]*pcState
	next  int
	ready bool
}

var (
	bridgeOnce sync.Once
	theBridge  *bridge
	bridgeErr  error
)

// ErrNoBridge is returned by Connect in a JavaScript environment without
// the page's peer-connection bridge.
var ErrNoBridge = errors.New("rtc: no WebRTC bridge (nbrtcPost): run this wasm in narrowband's Web Worker (web/static/nbworker.js), whose page owns the RTCPeerConnections")

func getBridge() (*bridge, error) {
	bridgeOnce.Do(func() {
		post := js.Global().Get("nbrtcPost")
		if post.Type() != js.TypeFunction {
			bridgeErr = ErrNoBridge
			return
		}
		b := &bridge{post: post, pcs: map[int]*pcState{}}
		// The callback runs on JavaScript's event loop: it copies what it
		// needs and queues it, never blocking.
		b.fn = js.FuncOf(func(this js.Value, args []js.Value) any {
			if len(args) > 0 {
				b.dispatch(args[0])
			}
			return nil
		})
		js.Global().Set("nbrtcEvent", b.fn)
		theBridge = b
	})
	return theBridge, bridgeErr
}

// event is one report from the page about one peer connection.
type event struct {
	kind string
	text string // JSON of a description or candidate; a state or error
	data []byte
}

// pcState is one peer connection's inbox: Connect reads it until the data
// channel opens, the Conn's reader after that.
type pcState struct {
	id   int
	mu   sync.Mutex
	q    []event
	wake chan struct{}
	conn atomic.Pointer[Conn]
}

func (s *pcState) push(e event) {
	s.mu.Lock()
	s.q = append(s.q, e)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *pcState) pop() (event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.q) == 0 {
		return event{}, false
	}
	e := s.q[0]
	s.q[0] = event{}
	s.q = s.q[1:]
	return e, true
}

func (b *bridge) dispatch(ev js.Value) {
	if ev.Type() != js.TypeObject {
		return
	}
	id := ev.Get("id")
	if id.Type() != js.TypeNumber {
		return
	}
	b.mu.Lock()
	s := b.pcs[id.Int()]
	b.mu.Unlock()
	if s == nil {
		return // a connection already given up
	}
	kind := ev.Get("ev").String()
	e := event{kind: kind}
	switch kind {
	case "ack":
		// Handled here, not queued: a Send waiting for room must not wait
		// behind received messages the application has not read yet.
		if n := ev.Get("n"); n.Type() == js.TypeNumber {
			if c := s.conn.Load(); c != nil {
				c.inflight.Add(-int64(n.Int()))
				notifyLow(c.low)
			}
		}
		return
	case "path":
		if c := s.conn.Load(); c != nil && ev.Get("kind").Type() == js.TypeString {
			c.candidate.Store(ev.Get("kind").String())
			if r := ev.Get("rtt"); r.Type() == js.TypeNumber {
				c.rtt.Store(int64(r.Float() * float64(time.Second)))
			}
		}
		return
	case "msg":
		// Anything but an ArrayBuffer would make the Uint8Array
		// constructor throw, which panics here: drop it.
		buf := ev.Get("buf")
		if !buf.InstanceOf(js.Global().Get("ArrayBuffer")) {
			return
		}
		u8 := js.Global().Get("Uint8Array").New(buf)
		e.data = make([]byte, u8.Length())
		js.CopyBytesToGo(e.data, u8)
	default:
		if t := ev.Get("json"); t.Type() == js.TypeString {
			e.text = t.String()
		} else if t := ev.Get("text"); t.Type() == js.TypeString {
			e.text = t.String()
		}
	}
	s.push(e)
}

func notifyLow(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (b *bridge) open() *pcState {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	s := &pcState{id: b.next, wake: make(chan struct{}, 1)}
	b.pcs[s.id] = s
	return s
}

func (b *bridge) forget(s *pcState) {
	b.mu.Lock()
	delete(b.pcs, s.id)
	b.mu.Unlock()
}

func (b *bridge) send(op string, s *pcState, fields map[string]any, transfer ...any) {
	m := map[string]any{"op": op, "id": s.id}
	for k, v := range fields {
		m[k] = v
	}
	b.post.Invoke(js.ValueOf(m), js.ValueOf(transfer))
}

// Signaler is the part of a signaling member Connect needs;
// *signaling.BrowserClient implements it.
type Signaler interface {
	ID() string
	Send(ctx context.Context, m signaling.Message) error
	Signals(peer string) <-chan signaling.Message
	Peers() []string
	Done() <-chan struct{}
}

// signal is the Data of an offer, answer or candidate message, as the
// native build writes it (pion's SessionDescription and ICECandidateInit
// marshal to the browser's RTCSessionDescriptionInit and
// RTCIceCandidateInit, so the JSON is passed through as it is).
type signal struct {
	Session   string          `json:"session"`
	SDP       json.RawMessage `json:"sdp,omitempty"`
	Candidate json.RawMessage `json:"candidate,omitempty"`
}

const maxEarlyCandidates = 64

// Connect opens a link to the peer remote through sig, as the native
// Connect does: the peer whose ID sorts first offers; it returns once the
// data channel is open. Config.Loopback, ListenAddr, SocketBuffer,
// NoOffload and FailTimeout have no effect here: the browser owns the
// sockets and ICE timers.
func Connect(ctx context.Context, sig Signaler, remote string, cfg Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	b, err := getBridge()
	if err != nil {
		return nil, err
	}
	local := sig.ID()
	if remote == local {
		return nil, fmt.Errorf("rtc: connect %s to itself", local)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
	}
	var offer *signaling.Message
	for {
		c, newer, err := attempt(ctx, b, sig, remote, cfg, offer)
		if newer == nil {
			return c, err
		}
		offer = newer
	}
}

func attempt(ctx context.Context, b *bridge, sig Signaler, remote string, cfg Config, offer *signaling.Message) (*Conn, *signaling.Message, error) {
	local := sig.ID()
	s := b.open()
	var ice []any
	for _, srv := range cfg.ICEServers {
		urls := make([]any, len(srv.URLs))
		for i, u := range srv.URLs {
			urls[i] = u
		}
		ice = append(ice, map[string]any{"urls": urls, "username": srv.Username, "credential": srv.Credential})
	}
	b.send("new", s, map[string]any{"ice": ice, "relay": cfg.RelayOnly, "label": cfg.Label, "highWater": cfg.SendHighWater})
	ok := false
	defer func() {
		if !ok {
			b.send("close", s, nil)
			b.forget(s)
		}
	}()
	offerer := local < remote
	session := ""
	if offerer {
		session = newSession()
		if err := waitForPeer(ctx, sig, remote); err != nil {
			return nil, nil, err
		}
		b.send("offer", s, nil)
	}
	sendSignal := func(typ string, sg signal) error {
		data, err := json.Marshal(sg)
		if err != nil {
			return err
		}
		if err := sig.Send(ctx, signaling.Message{Type: typ, To: remote, Data: data}); err != nil {
			return fmt.Errorf("rtc: send %s to %s: %w", typ, remote, err)
		}
		return nil
	}
	// Our candidates wait until our description is out, theirs until
	// theirs is in, as in the native build.
	described := false
	var mine []json.RawMessage
	type early struct {
		session string
		init    json.RawMessage
	}
	var theirs []early
	haveRemote := false
	sigs := sig.Signals(remote)
	for {
		for {
			e, more := s.pop()
			if !more {
				break
			}
			switch e.kind {
			case "sdp":
				typ := signaling.TypeAnswer
				if offerer {
					typ = signaling.TypeOffer
				}
				if err := sendSignal(typ, signal{Session: session, SDP: json.RawMessage(e.text)}); err != nil {
					return nil, nil, err
				}
				described = true
				for _, c := range mine {
					_ = sendSignal(signaling.TypeCandidate, signal{Session: session, Candidate: c})
				}
				mine = nil
			case "cand":
				if described {
					_ = sendSignal(signaling.TypeCandidate, signal{Session: session, Candidate: json.RawMessage(e.text)})
				} else {
					mine = append(mine, json.RawMessage(e.text))
				}
			case "open":
				c := newConn(cfg, remote, b, s)
				c.sigs = sigs
				ok = true
				go c.readLoop()
				return c, nil, nil
			case "closed", "err":
				return nil, nil, fmt.Errorf("rtc: connect %s → %s: the browser's peer connection failed: %s (no working ICE path; check STUN/TURN settings; on loopback Chromium needs --allow-loopback-in-peer-connection)", local, remote, e.text)
			}
		}
		var m signaling.Message
		if offer != nil {
			m, offer = *offer, nil
		} else {
			select {
			case m = <-sigs:
			case <-s.wake:
				continue
			case <-sig.Done():
				return nil, nil, fmt.Errorf("rtc: connect %s → %s: signaling connection ended", local, remote)
			case <-ctx.Done():
				return nil, nil, fmt.Errorf("rtc: connect %s → %s (offerer=%v, remote description=%v): %w", local, remote, offerer, haveRemote, ctx.Err())
			}
		}
		var sg signal
		if err := json.Unmarshal(m.Data, &sg); err != nil {
			continue
		}
		switch {
		case m.Type == signaling.TypeOffer && !offerer && session != "" && sg.Session != session && sg.SDP != nil:
			return nil, &m, nil // the offerer started over
		case m.Type == signaling.TypeOffer && !offerer && session == "" && sg.SDP != nil:
			session = sg.Session
			b.send("answer", s, map[string]any{"json": string(sg.SDP)})
			haveRemote = true
		case m.Type == signaling.TypeAnswer && offerer && sg.Session == session && !haveRemote && sg.SDP != nil:
			b.send("remote", s, map[string]any{"json": string(sg.SDP)})
			haveRemote = true
		case m.Type == signaling.TypeCandidate && sg.Candidate != nil:
			if !haveRemote {
				if len(theirs) < maxEarlyCandidates {
					theirs = append(theirs, early{sg.Session, sg.Candidate})
				}
				continue
			}
			if sg.Session == session {
				b.send("cand", s, map[string]any{"json": string(sg.Candidate)})
			}
		}
		if haveRemote && theirs != nil {
			for _, c := range theirs {
				if c.session == session {
					b.send("cand", s, map[string]any{"json": string(c.init)})
				}
			}
			theirs = nil
		}
	}
}

// waitForPeer returns once remote is a member of sig's room.
func waitForPeer(ctx context.Context, sig Signaler, remote string) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range sig.Peers() {
			if p == remote {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-sig.Done():
			return fmt.Errorf("rtc: waiting for %s to join: signaling connection ended", remote)
		case <-ctx.Done():
			return fmt.Errorf("rtc: waiting for %s to join the room: %w", remote, ctx.Err())
		}
	}
}

func newSession() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Conn is one end of a data-channel link whose channel the page holds. It
// implements transport.Conn.
type Conn struct {
	cfg    Config
	remote string
	b      *bridge
	s      *pcState
	sigs   <-chan signaling.Message

	sendMu   sync.Mutex
	sendBuf  []byte
	inflight atomic.Int64 // bytes posted to the page and not yet in its channel's buffer below the low mark
	low      chan struct{}

	q          *recvQueue
	readerDone chan struct{}
	closing    chan struct{}
	closeOnce  sync.Once

	bytesSent, bytesRecv, msgsSent, msgsRecv atomic.Uint64
	sendBlocked                              atomic.Int64
	candidate                                atomic.Value // string
	rtt                                      atomic.Int64
}

var _ transport.Conn = (*Conn)(nil)

func newConn(cfg Config, remote string, b *bridge, s *pcState) *Conn {
	c := &Conn{cfg: cfg, remote: remote, b: b, s: s,
		sendBuf:    make([]byte, MaxChunk),
		low:        make(chan struct{}, 1),
		q:          newRecvQueue(cfg.RecvBuffer),
		readerDone: make(chan struct{}),
		closing:    make(chan struct{}),
	}
	c.candidate.Store("")
	s.conn.Store(c)
	return c
}

// Remote is the peer ID at the other end.
func (c *Conn) Remote() string { return c.remote }

// Send queues msg, blocking while more than Config.SendHighWater bytes are
// on their way to the channel or in its buffer.
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
		c.postChunk(chunk)
		return nil
	})
	if err != nil {
		return err
	}
	c.bytesSent.Add(uint64(len(msg)))
	c.msgsSent.Add(1)
	return nil
}

func (c *Conn) postChunk(chunk []byte) {
	u8 := js.Global().Get("Uint8Array").New(len(chunk))
	js.CopyBytesToJS(u8, chunk)
	buf := u8.Get("buffer")
	c.inflight.Add(int64(len(chunk)))
	c.b.send("send", c.s, map[string]any{"buf": buf}, buf)
}

func (c *Conn) waitRoom(ctx context.Context) error {
	if c.inflight.Load() <= int64(c.cfg.SendHighWater) {
		return nil
	}
	start := time.Now()
	defer func() { c.sendBlocked.Add(int64(time.Since(start))) }()
	for c.inflight.Load() > int64(c.cfg.SendHighWater) {
		select {
		case <-c.low:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closing:
			return transport.ErrClosed
		case <-c.readerDone:
			if err := c.q.failure(); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			return fmt.Errorf("rtc: send to %s: the peer closed the link: %w", c.remote, io.ErrClosedPipe)
		}
	}
	return nil
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

// readLoop reassembles the page's data-channel messages until the channel
// ends.
func (c *Conn) readLoop() {
	defer close(c.readerDone)
	var r reassembler
	for {
		e, more := c.s.pop()
		if !more {
			select {
			case <-c.s.wake:
				continue
			case <-c.closing:
				c.q.finish(transport.ErrClosed)
				return
			}
		}
		switch e.kind {
		case "msg":
			msg, fin, err := r.feed(e.data)
			switch {
			case err != nil:
				c.q.finish(fmt.Errorf("rtc: link to %s: %w", c.remote, err))
				c.b.send("close", c.s, nil)
				return
			case fin:
				c.q.finish(io.EOF)
			case msg != nil:
				if err := c.q.push(msg, c.closing); err != nil {
					return
				}
			}
		case "closed", "err":
			c.q.finish(fmt.Errorf("rtc: link to %s lost: %s", c.remote, e.text))
			return
		}
	}
}

// Close sends the clean-close chunk and has the page close the channel
// once what was sent has left (at most Config.CloseLinger later).
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.sendMu.Lock()
		c.postChunk([]byte{chunkFin})
		c.sendMu.Unlock()
		close(c.closing)
		c.b.send("close", c.s, map[string]any{"linger": c.cfg.CloseLinger.Milliseconds()})
		c.b.forget(c.s)
		// Later signals from this peer belong to a new session.
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

// Stats reports this end's counters, and the path and RTT the page last
// read from the peer connection's statistics.
func (c *Conn) Stats() transport.Stats {
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
