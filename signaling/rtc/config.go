package rtc

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// ICEServer is a STUN or TURN server, as in the browser's RTCIceServer.
type ICEServer struct {
	URLs       []string // "stun:host:port", "turn:host:port?transport=udp"
	Username   string   // TURN only
	Credential string   // TURN only
}

// Config tunes a link. DefaultConfig gives working values; zero fields in
// a Config passed to Connect are filled from it.
type Config struct {
	// ICEServers lists STUN/TURN servers; empty means host candidates only.
	ICEServers []ICEServer
	// RelayOnly uses only TURN relay candidates (ICE transport policy
	// "relay"): for testing a relay path or hiding peers' addresses.
	RelayOnly bool
	// Loopback offers only loopback candidates and switches mDNS off: for
	// runs where every peer is on this machine (the machine's other
	// interfaces would otherwise be tried too).
	Loopback bool
	// ListenAddr is the local UDP address for ICE host candidates (default
	// "127.0.0.1:0" with Loopback, else "0.0.0.0:0").
	ListenAddr string
	// NAT1To1IPs, if set, replaces host candidate addresses with these
	// public IPs (a peer with a known public address and port forwarding).
	NAT1To1IPs []string
	// SocketBuffer is SO_RCVBUF/SO_SNDBUF of the ICE socket (default 4 MiB;
	// the Linux default of 208 KiB drops datagrams and stalls SCTP).
	SocketBuffer int
	// NoOffload sends and receives the ICE host socket's datagrams one by
	// one instead of in GSO/GRO batches (see batchConn): for comparing, or
	// for a kernel or device whose offload misbehaves.
	NoOffload bool
	// SendHighWater is how many bytes may wait in the data channel's send
	// buffer before Send blocks; Send resumes below half of it (default
	// 1 MiB: about 0.1 s at 80 Mbps, enough to keep the link busy).
	SendHighWater int
	// RecvBuffer is how many bytes of complete messages may wait for Recv
	// before the reader stops taking data off the channel (default 8 MiB;
	// at least one message is always accepted).
	RecvBuffer int
	// Label names the data channel (default "narrowband").
	Label string
	// ConnectTimeout bounds Connect when its context has no deadline
	// (default 30 s).
	ConnectTimeout time.Duration
	// FailTimeout is how long the link may go without any packet from the
	// peer before it is declared dead and Send/Recv fail (ICE "failed"; the
	// ICE keepalive runs every second). Default 15 s; shorter detects a
	// crashed peer sooner but may cut a link through a brief outage.
	FailTimeout time.Duration
	// CloseLinger bounds how long Close waits for sent data to be
	// acknowledged when the peer has stopped reading (default 1 s); Close
	// does not wait at all once the peer has closed its end.
	CloseLinger time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults documented on Config's fields.
func DefaultConfig() Config {
	return Config{
		SocketBuffer:   4 << 20,
		SendHighWater:  1 << 20,
		RecvBuffer:     8 << 20,
		Label:          "narrowband",
		ConnectTimeout: 30 * time.Second,
		CloseLinger:    time.Second,
		FailTimeout:    15 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.ListenAddr == "" {
		c.ListenAddr = "0.0.0.0:0"
		if c.Loopback {
			c.ListenAddr = "127.0.0.1:0"
		}
	}
	if c.SocketBuffer == 0 {
		c.SocketBuffer = d.SocketBuffer
	}
	if c.SendHighWater == 0 {
		c.SendHighWater = d.SendHighWater
	}
	if c.RecvBuffer == 0 {
		c.RecvBuffer = d.RecvBuffer
	}
	if c.Label == "" {
		c.Label = d.Label
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = d.ConnectTimeout
	}
	if c.FailTimeout == 0 {
		c.FailTimeout = d.FailTimeout
	}
	if c.CloseLinger == 0 {
		c.CloseLinger = d.CloseLinger
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first bad field, naming it and its value.
func (c Config) Validate() error {
	d := c.withDefaults()
	if _, err := net.ResolveUDPAddr("udp4", d.ListenAddr); err != nil {
		return fmt.Errorf("rtc: Config.ListenAddr = %q: %v (want HOST:PORT, e.g. 0.0.0.0:0)", d.ListenAddr, err)
	}
	for i, s := range d.ICEServers {
		if len(s.URLs) == 0 {
			return fmt.Errorf("rtc: Config.ICEServers[%d] has no URLs", i)
		}
		for _, u := range s.URLs {
			if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "stuns:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
				return fmt.Errorf("rtc: Config.ICEServers[%d] URL %q: want stun:, stuns:, turn: or turns:", i, u)
			}
		}
	}
	if d.RelayOnly && len(d.ICEServers) == 0 {
		return fmt.Errorf("rtc: Config.RelayOnly needs a TURN server in Config.ICEServers")
	}
	for _, ip := range d.NAT1To1IPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("rtc: Config.NAT1To1IPs: %q is not an IP address", ip)
		}
	}
	switch {
	case d.SocketBuffer < 64<<10:
		return fmt.Errorf("rtc: Config.SocketBuffer = %d, want ≥ 65536 (4 MiB recommended)", d.SocketBuffer)
	case d.SendHighWater < MaxChunk:
		return fmt.Errorf("rtc: Config.SendHighWater = %d, want ≥ %d", d.SendHighWater, MaxChunk)
	case d.RecvBuffer < MaxChunk:
		return fmt.Errorf("rtc: Config.RecvBuffer = %d, want ≥ %d", d.RecvBuffer, MaxChunk)
	case len(d.Label) > 255:
		return fmt.Errorf("rtc: Config.Label is %d bytes, want ≤ 255", len(d.Label))
	case d.ConnectTimeout < 0 || d.CloseLinger < 0:
		return fmt.Errorf("rtc: Config.ConnectTimeout = %v, CloseLinger = %v: want ≥ 0", d.ConnectTimeout, d.CloseLinger)
	case d.FailTimeout < 2*time.Second:
		return fmt.Errorf("rtc: Config.FailTimeout = %v, want ≥ 2s (keepalives go out every second)", d.FailTimeout)
	}
	return nil
}
