package rtc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/transport/transporttest"
	"github.com/narrowband/narrowband/signaling"
)

const testSecret = "rtc test secret"

var testKey = func() []byte {
	k, err := signaling.DeriveKey(testSecret)
	if err != nil {
		panic(err)
	}
	return k
}()

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startSignal runs a signaling server on httptest and returns the room URL.
func startSignal(t testing.TB) string {
	t.Helper()
	s, err := signaling.NewServer(signaling.Config{Key: testKey, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { s.Close(); hs.Close() })
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/run"
}

func join(t testing.TB, url, id string) *signaling.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := signaling.DialOptions(ctx, url, id, "", signaling.ClientOptions{Key: testKey, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func loopbackConfig() Config {
	c := DefaultConfig()
	c.Loopback = true
	c.Logger = quiet()
	// The helper process of a benchmark learns the setting under test from
	// its environment.
	if os.Getenv(noOffloadEnv) != "" {
		c.NoOffload = true
	}
	return c
}

// connectPair joins two peers to a fresh server and connects them.
func connectPair(t testing.TB, cfg Config) (a, b *Conn) {
	t.Helper()
	url := startSignal(t)
	sa, sb := join(t, url, "a"), join(t, url, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var errA, errB error
	wg.Add(2)
	go func() { defer wg.Done(); a, errA = Connect(ctx, sa, "b", cfg) }()
	go func() { defer wg.Done(); b, errB = Connect(ctx, sb, "a", cfg) }()
	wg.Wait()
	if errA != nil || errB != nil {
		if a != nil {
			a.Close()
		}
		if b != nil {
			b.Close()
		}
		t.Fatalf("connect: a: %v; b: %v", errA, errB)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, func(t *testing.T) (transport.Conn, transport.Conn) {
		return connectPair(t, loopbackConfig())
	})
}

func TestLoopbackPath(t *testing.T) {
	a, b := connectPair(t, loopbackConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Send(ctx, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Recv(ctx); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*Conn{"a": a, "b": b} {
		s := c.Stats()
		if s.Candidate != "host" {
			t.Errorf("%s: Candidate = %q, want host on loopback", name, s.Candidate)
		}
		if s.RTT <= 0 || s.RTT > time.Second {
			t.Errorf("%s: RTT = %v, want a loopback round trip", name, s.RTT)
		}
	}
	if s := a.Stats(); s.BytesSent != 4 || s.MessagesSent != 1 {
		t.Errorf("a: Stats %+v, want 1 message of 4 bytes sent", s)
	}
}

// TestHostileChunk: a peer that sends a chunk no valid sender makes gets its
// link closed with a protocol error, not a crash or a silent hang.
func TestHostileChunk(t *testing.T) {
	a, b := connectPair(t, loopbackConfig())
	if _, err := a.rwc.Write([]byte{chunkStart, 0xff, 0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if msg, err := b.Recv(ctx); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Recv after a 4 GiB message announcement: got (%d bytes, %v), want ErrProtocol", len(msg), err)
	}
}

// TestPeerVanishes: when the other end's peer connection dies without a
// clean close, Recv reports a lost link instead of io.EOF.
func TestPeerVanishes(t *testing.T) {
	a, b := connectPair(t, loopbackConfig())
	_ = a.pc.Close() // no close chunk: as if the process died
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := b.Recv(ctx)
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv after the peer vanished: got %v, want a lost-link error", err)
	}
	t.Logf("Recv after the peer vanished: %v", err)
}

// TestSecondCloseDoesNotLinger: once the peer has closed, closing this end
// returns without waiting out CloseLinger for an acknowledgement nobody
// will send (it took the whole second before), and a message sent before
// the first close still arrives.
func TestSecondCloseDoesNotLinger(t *testing.T) {
	cfg := loopbackConfig()
	cfg.CloseLinger = 20 * time.Second // a wait this long cannot hide in the noise
	a, b := connectPair(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Send(ctx, []byte("last words")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if msg, err := b.Recv(ctx); err != nil || string(msg) != "last words" {
		t.Fatalf("Recv after the peer closed: %q, %v; want the message it sent first", msg, err)
	}
	if _, err := b.Recv(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("second Recv: %v, want io.EOF", err)
	}
	start := time.Now()
	b.Close()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Close after the peer closed took %v; it waited for CloseLinger (%v)", d, cfg.CloseLinger)
	}
}

func TestConnectTimeout(t *testing.T) {
	url := startSignal(t)
	sa := join(t, url, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Connect(ctx, sa, "nobody", loopbackConfig())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect to a peer that never answers: got %v, want DeadlineExceeded", err)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := map[string]Config{
		"listen":     {ListenAddr: "nohost"},
		"ice url":    {ICEServers: []ICEServer{{URLs: []string{"http://x"}}}},
		"relay only": {RelayOnly: true},
		"nat ip":     {NAT1To1IPs: []string{"1.2.3"}},
		"buffer":     {SocketBuffer: 10},
	}
	for name, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
}

// An in-process coordinator can open links too.
var _ Signaler = (*signaling.Local)(nil)
var _ Signaler = (*signaling.Client)(nil)

// TestConnectFailureNoLeak: a Connect that times out releases its peer
// connection, socket and goroutines.
func TestConnectFailureNoLeak(t *testing.T) {
	url := startSignal(t)
	sa := join(t, url, "a")
	join(t, url, "z") // present, but never answers
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Connect(ctx, sa, "z", loopbackConfig()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect to a silent peer: got %v, want DeadlineExceeded", err)
	}
	// Goroutines of pion or of this package's link, not the signaling
	// server's (those come and go with its clients, and counting all
	// goroutines raced with them on a loaded machine).
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := linkGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of the link left after a failed Connect:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// linkGoroutines returns the stacks of goroutines running pion, Connect or
// a method of this package's link types.
func linkGoroutines() []string {
	var out []string
	for _, g := range transporttest.GoroutineStacks() {
		if strings.Contains(g, "github.com/pion/") || strings.Contains(g, "signaling/rtc.(*") || strings.Contains(g, "signaling/rtc.Connect") {
			out = append(out, g)
		}
	}
	return out
}

// TestSendBlockedPeerVanishes: a Send held by back-pressure returns an
// error when the peer disappears, instead of waiting for its context.
func TestSendBlockedPeerVanishes(t *testing.T) {
	a, b := connectPair(t, loopbackConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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
	time.Sleep(500 * time.Millisecond) // b reads nothing: a fills up and blocks
	_ = b.pc.Close()                   // b vanishes without a close marker
	select {
	case err := <-res:
		if errors.Is(err, context.DeadlineExceeded) || err == nil {
			t.Fatalf("blocked Send after the peer vanished: %v", err)
		}
		t.Logf("blocked Send after the peer vanished: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Send still blocked 20 s after the peer vanished")
	}
}

// TestOffererRetries: an offer from an abandoned attempt is still queued
// for the answerer when the offerer tries again; the answerer must follow
// the newer offer instead of waiting on the dead one.
func TestOffererRetries(t *testing.T) {
	url := startSignal(t)
	sa, sb := join(t, url, "a"), join(t, url, "b")
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Connect(short, sa, "b", loopbackConfig()); err == nil {
		t.Fatal("first attempt connected with nobody answering")
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	var wg sync.WaitGroup
	var b *Conn
	var errB error
	wg.Add(1)
	go func() { defer wg.Done(); b, errB = Connect(ctx, sb, "a", loopbackConfig()) }()
	a, err := Connect(ctx, sa, "b", loopbackConfig())
	wg.Wait()
	if err != nil || errB != nil {
		t.Fatalf("second attempt: a: %v; b: %v", err, errB)
	}
	defer a.Close()
	defer b.Close()
	if err := a.Send(ctx, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Recv(ctx); err != nil || string(got) != "hi" {
		t.Fatalf("b got %q, %v", got, err)
	}
}

// TestLocalCoordinatorLink: a coordinator attached in the signaling
// server's process links to a websocket peer.
func TestLocalCoordinatorLink(t *testing.T) {
	s, err := signaling.NewServer(signaling.Config{Key: testKey, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	defer func() { s.Close(); hs.Close() }()
	coord, err := s.Attach("run", "coordinator")
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	peer := join(t, "ws"+strings.TrimPrefix(hs.URL, "http")+"/run", "stage0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var pc *Conn
	var errP error
	wg.Add(1)
	go func() { defer wg.Done(); pc, errP = Connect(ctx, peer, "coordinator", loopbackConfig()) }()
	cc, err := Connect(ctx, coord, "stage0", loopbackConfig())
	wg.Wait()
	if err != nil || errP != nil {
		t.Fatalf("coordinator: %v; peer: %v", err, errP)
	}
	defer cc.Close()
	defer pc.Close()
	if err := cc.Send(ctx, []byte("assign 0")); err != nil {
		t.Fatal(err)
	}
	if got, err := pc.Recv(ctx); err != nil || string(got) != "assign 0" {
		t.Fatalf("peer got %q, %v", got, err)
	}
}

// TestPrflxOnLoopbackIsHost: an address ICE learned from a check that beat
// the host candidate through signaling is still a loopback path; a
// peer-reflexive candidate elsewhere stays one.
func TestPrflxOnLoopbackIsHost(t *testing.T) {
	prflx := func(addr string) *webrtc.ICECandidate {
		return &webrtc.ICECandidate{Typ: webrtc.ICECandidateTypePrflx, Address: addr}
	}
	host := &webrtc.ICECandidate{Typ: webrtc.ICECandidateTypeHost, Address: "127.0.0.1"}
	for _, tc := range []struct {
		remote *webrtc.ICECandidate
		want   string
	}{{prflx("127.0.0.1"), "host"}, {prflx("::1"), "host"}, {prflx("203.0.113.7"), "prflx"}, {host, "host"}} {
		if got := pathKind(onLoopback(host), onLoopback(tc.remote)); got != tc.want {
			t.Errorf("remote %s %s: path %q, want %q", tc.remote.Typ, tc.remote.Address, got, tc.want)
		}
	}
}
