//go:build !js

package rtc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/narrowband/narrowband/signaling"
)

// Signaler is the part of a signaling member Connect needs;
// *signaling.Client and *signaling.Local implement it.
type Signaler interface {
	ID() string
	Send(ctx context.Context, m signaling.Message) error
	Signals(peer string) <-chan signaling.Message
	Peers() []string
	Done() <-chan struct{}
}

// signal is the Data of an offer, answer or candidate message. Session
// tells one connection attempt's messages from a stale attempt's.
type signal struct {
	Session   string                     `json:"session"`
	SDP       *webrtc.SessionDescription `json:"sdp,omitempty"`
	Candidate *webrtc.ICECandidateInit   `json:"candidate,omitempty"`
}

// maxEarlyCandidates bounds candidates held before the remote description.
const maxEarlyCandidates = 64

// Connect opens a link to the peer remote through sig. Both peers call it
// with each other's ID; the one whose ID sorts first offers. It returns once
// the data channel is open. Run at most one Connect per (sig, remote) pair
// at a time: the signals from one peer share one mailbox. If the offerer
// gives up and tries again, the answerer follows the newest offer.
func Connect(ctx context.Context, sig Signaler, remote string, cfg Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
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
		c, newer, err := attempt(ctx, sig, remote, cfg, offer)
		if newer == nil {
			return c, err
		}
		cfg.Logger.Debug("rtc: newer offer; starting over", "local", local, "remote", remote)
		offer = newer
	}
}

// attempt runs one offer/answer exchange. An answerer that sees an offer of
// another session than the one it answered returns that offer (newer) so
// Connect starts over with it; offer, if set, is such an offer to answer.
func attempt(ctx context.Context, sig Signaler, remote string, cfg Config, offer *signaling.Message) (c *Conn, newer *signaling.Message, err error) {
	local := sig.ID()
	log := cfg.Logger.With("local", local, "remote", remote)

	udp, mux, err := listenICE(cfg)
	if err != nil {
		return nil, nil, err
	}
	pc, err := newPeerConnection(cfg, mux)
	if err != nil {
		_ = mux.Close()
		_ = udp.Close()
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = pc.Close()
			_ = mux.Close()
			_ = udp.Close()
		}
	}()

	var conn atomic.Pointer[Conn]
	failed := make(chan webrtc.PeerConnectionState, 1)
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s != webrtc.PeerConnectionStateFailed && s != webrtc.PeerConnectionStateClosed {
			return
		}
		if c := conn.Load(); c != nil {
			// The link is gone for good. Closing the data channel only ends
			// our sending direction; closing the peer connection ends the
			// SCTP association, which fails the reader's blocked Read.
			if s == webrtc.PeerConnectionStateFailed {
				c.lost.Store(fmt.Errorf("rtc: link to %s lost: nothing heard from the peer for %v (Config.FailTimeout); it crashed or the network path broke", remote, cfg.FailTimeout))
				go func() { _ = pc.Close() }()
			}
			return
		}
		select {
		case failed <- s:
		default:
		}
	})

	offerer := local < remote
	session := ""
	if offerer {
		session = newSession()
	}
	out := &outbox{sig: sig, remote: remote, log: log}
	defer out.stop() // candidates gathered later are not needed, or stale
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			log.Debug("rtc: local candidate", "candidate", c.String())
			init := c.ToJSON()
			out.candidate(&init)
		}
	})

	type opened struct {
		dc  *webrtc.DataChannel
		rwc datachannel.ReadWriteCloser
		err error
	}
	openc := make(chan opened, 1)
	onOpen := func(dc *webrtc.DataChannel) {
		dc.OnOpen(func() {
			rwc, err := dc.Detach()
			select {
			case openc <- opened{dc, rwc, err}:
			default:
				if err == nil {
					_ = rwc.Close()
				}
			}
		})
	}
	if offerer {
		ordered := true
		dc, err := pc.CreateDataChannel(cfg.Label, &webrtc.DataChannelInit{Ordered: &ordered})
		if err != nil {
			return nil, nil, fmt.Errorf("rtc: create data channel: %w", err)
		}
		onOpen(dc)
		// The server drops messages to peers not in the room yet, so an
		// offer sent before the remote joins would be lost.
		if err := waitForPeer(ctx, sig, remote); err != nil {
			return nil, nil, err
		}
		offer, err := pc.CreateOffer(nil)
		if err != nil {
			return nil, nil, fmt.Errorf("rtc: create offer: %w", err)
		}
		if err := pc.SetLocalDescription(offer); err != nil {
			return nil, nil, fmt.Errorf("rtc: set local offer: %w", err)
		}
		if err := out.description(ctx, signaling.TypeOffer, session, &offer); err != nil {
			return nil, nil, err
		}
	} else {
		pc.OnDataChannel(func(dc *webrtc.DataChannel) {
			if dc.Label() == cfg.Label {
				onOpen(dc)
			}
		})
	}

	type earlyCandidate struct {
		session string
		init    webrtc.ICECandidateInit
	}
	var early []earlyCandidate
	haveRemote := false
	sigs := sig.Signals(remote)
	for {
		var m signaling.Message
		if offer != nil {
			m, offer = *offer, nil
		} else {
			select {
			case m = <-sigs:
			case o := <-openc:
				if o.err != nil {
					return nil, nil, fmt.Errorf("rtc: detach data channel (SettingEngine.DetachDataChannels must be on): %w", o.err)
				}
				c := newConn(cfg, remote, pc, o.dc, o.rwc, mux, udp)
				c.sigs = sigs
				conn.Store(c)
				if s := pc.ConnectionState(); s == webrtc.PeerConnectionStateFailed {
					go func() { _ = pc.Close() }() // failed before we could watch
				}
				ok = true
				out.stop()
				return c, nil, nil
			case s := <-failed:
				return nil, nil, fmt.Errorf("rtc: connect %s → %s: peer connection %s (no working ICE path; check STUN/TURN settings and firewalls)", local, remote, s)
			case <-sig.Done():
				return nil, nil, fmt.Errorf("rtc: connect %s → %s: signaling connection ended", local, remote)
			case <-ctx.Done():
				return nil, nil, fmt.Errorf("rtc: connect %s → %s (offerer=%v, remote description=%v, ICE %s): %w",
					local, remote, offerer, haveRemote, pc.ICEConnectionState(), ctx.Err())
			}
		}
		var s signal
		if err := json.Unmarshal(m.Data, &s); err != nil {
			log.Warn("rtc: ignoring unreadable signal", "type", m.Type, "err", err)
			continue
		}
		switch {
		case m.Type == signaling.TypeOffer && !offerer && session != "" && s.Session != session && s.SDP != nil:
			return nil, &m, nil // the offerer started over
		case m.Type == signaling.TypeOffer && !offerer && session == "" && s.SDP != nil:
			session = s.Session
			if err := pc.SetRemoteDescription(*s.SDP); err != nil {
				return nil, nil, fmt.Errorf("rtc: offer from %s: %w", remote, err)
			}
			haveRemote = true
			answer, err := pc.CreateAnswer(nil)
			if err != nil {
				return nil, nil, fmt.Errorf("rtc: create answer: %w", err)
			}
			if err := pc.SetLocalDescription(answer); err != nil {
				return nil, nil, fmt.Errorf("rtc: set local answer: %w", err)
			}
			if err := out.description(ctx, signaling.TypeAnswer, session, &answer); err != nil {
				return nil, nil, err
			}
		case m.Type == signaling.TypeAnswer && offerer && s.Session == session && !haveRemote && s.SDP != nil:
			if err := pc.SetRemoteDescription(*s.SDP); err != nil {
				return nil, nil, fmt.Errorf("rtc: answer from %s: %w", remote, err)
			}
			haveRemote = true
		case m.Type == signaling.TypeCandidate && s.Candidate != nil:
			if !haveRemote {
				if len(early) < maxEarlyCandidates {
					early = append(early, earlyCandidate{s.Session, *s.Candidate})
				}
				continue
			}
			if s.Session != session {
				continue
			}
			if err := pc.AddICECandidate(*s.Candidate); err != nil {
				log.Warn("rtc: bad candidate", "err", err)
			}
		default:
			log.Debug("rtc: ignoring stale or unexpected signal", "type", m.Type)
		}
		if haveRemote && early != nil {
			for _, c := range early {
				if c.session == session {
					if err := pc.AddICECandidate(c.init); err != nil {
						log.Warn("rtc: bad candidate", "err", err)
					}
				}
			}
			early = nil
		}
	}
}

// outbox sends descriptions and candidates to the remote peer, holding
// candidates until the description is out so the peer sees them in order.
type outbox struct {
	sig    Signaler
	remote string
	log    *slog.Logger

	mu      sync.Mutex
	session string
	ready   bool
	stopped bool
	pending []*webrtc.ICECandidateInit
}

func (o *outbox) description(ctx context.Context, typ, session string, sdp *webrtc.SessionDescription) error {
	data, err := json.Marshal(signal{Session: session, SDP: sdp})
	if err != nil {
		return fmt.Errorf("rtc: encode %s: %w", typ, err)
	}
	if err := o.sig.Send(ctx, signaling.Message{Type: typ, To: o.remote, Data: data}); err != nil {
		return fmt.Errorf("rtc: send %s to %s: %w", typ, o.remote, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.session, o.ready = session, true
	for _, c := range o.pending {
		o.sendCandidateLocked(c)
	}
	o.pending = nil
	return nil
}

func (o *outbox) candidate(c *webrtc.ICECandidateInit) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.stopped:
	case !o.ready:
		o.pending = append(o.pending, c)
	default:
		o.sendCandidateLocked(c)
	}
}

func (o *outbox) sendCandidateLocked(c *webrtc.ICECandidateInit) {
	data, err := json.Marshal(signal{Session: o.session, Candidate: c})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.sig.Send(ctx, signaling.Message{Type: signaling.TypeCandidate, To: o.remote, Data: data}); err != nil {
		o.log.Warn("rtc: send candidate", "err", err)
	}
}

// stop drops candidates gathered after the link is up.
func (o *outbox) stop() {
	o.mu.Lock()
	o.stopped = true
	o.mu.Unlock()
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

// listenICE opens the ICE socket with large buffers and wraps it in a mux.
func listenICE(cfg Config) (*batchConn, ice.UDPMux, error) {
	addr, err := net.ResolveUDPAddr("udp4", cfg.ListenAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("rtc: ICE listen address %q: %w", cfg.ListenAddr, err)
	}
	udp, err := net.ListenUDP("udp4", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("rtc: open ICE socket on %s: %w", cfg.ListenAddr, err)
	}
	// Linux caps these at net.core.{r,w}mem_max; raise those (sysctl) if
	// throughput stalls.
	if err := udp.SetReadBuffer(cfg.SocketBuffer); err != nil {
		_ = udp.Close()
		return nil, nil, fmt.Errorf("rtc: set ICE socket receive buffer to %d: %w", cfg.SocketBuffer, err)
	}
	if err := udp.SetWriteBuffer(cfg.SocketBuffer); err != nil {
		_ = udp.Close()
		return nil, nil, fmt.Errorf("rtc: set ICE socket send buffer to %d: %w", cfg.SocketBuffer, err)
	}
	bc := newBatchConn(udp, !cfg.NoOffload)
	return bc, webrtc.NewICEUDPMux(slogFactory{cfg.Logger}.NewLogger("udpmux"), bc), nil
}

func newPeerConnection(cfg Config, mux ice.UDPMux) (*webrtc.PeerConnection, error) {
	se := webrtc.SettingEngine{LoggerFactory: slogFactory{cfg.Logger}}
	bn, err := newBufferedNet(cfg.SocketBuffer)
	if err != nil {
		return nil, err
	}
	se.SetNet(bn)
	se.DetachDataChannels()
	// Both ends are pion or a browser that negotiates it; DTLS already
	// authenticates every packet, so the SCTP CRC32c is redundant work.
	se.EnableSCTPZeroChecksum(true)
	se.SetICEUDPMux(mux)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	// "Disconnected" after a third of the silence, "failed" (link torn
	// down) after all of it; keepalives every second.
	se.SetICETimeouts(cfg.FailTimeout/3, cfg.FailTimeout, time.Second)
	if cfg.Loopback {
		se.SetIncludeLoopbackCandidate(true)
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
		se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	}
	if !cfg.Loopback && len(cfg.ICEServers) > 0 {
		// pion nominates by the local candidate's type alone, so a pair of
		// our host candidate and the peer's relay would win at once; wait
		// until the direct pairs through the NATs have been checked too.
		se.SetHostAcceptanceMinWait(time.Second)
	}
	if cfg.RelayOnly {
		// pion waits 2 s for a better path before settling on a relay;
		// with relays only there is none.
		se.SetRelayAcceptanceMinWait(0)
	}
	if len(cfg.NAT1To1IPs) > 0 {
		se.SetNAT1To1IPs(cfg.NAT1To1IPs, webrtc.ICECandidateTypeHost)
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	pcfg := webrtc.Configuration{}
	for _, s := range cfg.ICEServers {
		pcfg.ICEServers = append(pcfg.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	if cfg.RelayOnly {
		pcfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	pc, err := api.NewPeerConnection(pcfg)
	if err != nil {
		return nil, fmt.Errorf("rtc: new peer connection: %w", err)
	}
	return pc, nil
}
