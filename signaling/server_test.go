package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const testSecret = "correct horse battery staple"

var testKey = func() []byte {
	k, err := DeriveKey(testSecret)
	if err != nil {
		panic(err)
	}
	return k
}()

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startServer runs a server on httptest and returns its ws:// base URL.
func startServer(t *testing.T, mod func(*Config)) (*Server, string) {
	t.Helper()
	cfg := Config{Key: testKey, Logger: quietLogger()}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { s.Close(); hs.Close() })
	return s, "ws" + strings.TrimPrefix(hs.URL, "http")
}

func dial(t *testing.T, base, room, peer string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialOptions(ctx, base+"/"+room, peer, "", ClientOptions{Key: testKey, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("dial %s as %s: %v", room, peer, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recvType(t *testing.T, c interface {
	Recv(context.Context) (Message, error)
}, typ string) Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if m.Type == typ {
			return m
		}
	}
}

// rawJoin opens a websocket and runs the handshake by hand, so tests can
// then misbehave on an authenticated socket.
func rawJoin(t *testing.T, base, room, peer string, key []byte) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(base+"/"+room, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	var ch Message
	if err := ws.ReadJSON(&ch); err != nil {
		t.Fatal(err)
	}
	nonce, err := decodeNonce(ch.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	if key != nil {
		if err := ws.WriteJSON(Message{Type: TypeAuth, From: peer, Proof: Proof(key, nonce, room, peer)}); err != nil {
			t.Fatal(err)
		}
		var w Message
		if err := ws.ReadJSON(&w); err != nil || w.Type != TypeWelcome {
			t.Fatalf("raw join: got %+v, %v", w, err)
		}
	}
	return ws
}

// readUntilClose returns the error message the server sent before closing.
func readUntilClose(t *testing.T, ws *websocket.Conn) Message {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var last Message
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("socket ended without a close frame: %v", err)
			}
			return last
		}
		if err := json.Unmarshal(b, &last); err != nil {
			t.Fatalf("server sent non-JSON %q", b)
		}
	}
}

func TestAuth(t *testing.T) {
	_, base := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	t.Run("right secret joins", func(t *testing.T) {
		c, err := Dial(ctx, base+"/run1", "alice", testSecret)
		if err != nil {
			t.Fatalf("Dial with the right secret: %v", err)
		}
		c.Close()
	})
	t.Run("wrong secret refused", func(t *testing.T) {
		_, err := Dial(ctx, base+"/run1", "mallory", "guess")
		if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "wrong secret for room run1") {
			t.Fatalf("Dial with a wrong secret: got %v, want ErrAuth saying \"wrong secret for room run1\"", err)
		}
	})
	t.Run("empty secret refused locally", func(t *testing.T) {
		_, err := Dial(ctx, base+"/run1", "mallory", "")
		if err == nil || !strings.Contains(err.Error(), "empty run secret") {
			t.Fatalf("Dial with no secret: got %v", err)
		}
	})
	t.Run("missing proof refused", func(t *testing.T) {
		ws := rawJoin(t, base, "run1", "mallory", nil)
		if err := ws.WriteJSON(Message{Type: TypeAuth, From: "mallory"}); err != nil {
			t.Fatal(err)
		}
		m := readUntilClose(t, ws)
		if m.Code != CodeAuth || !strings.Contains(m.Error, "no proof") {
			t.Fatalf("missing proof: got %+v", m)
		}
	})
	t.Run("proof for another room refused", func(t *testing.T) {
		ws := rawJoin(t, base, "run2", "mallory", nil)
		var ch Message // rawJoin already read the challenge; answer for run1
		_ = ch
		if err := ws.WriteJSON(Message{Type: TypeAuth, From: "mallory", Proof: Proof(testKey, make([]byte, 32), "run1", "mallory")}); err != nil {
			t.Fatal(err)
		}
		m := readUntilClose(t, ws)
		if m.Code != CodeAuth || !strings.Contains(m.Error, "wrong secret for room run2") {
			t.Fatalf("replayed proof: got %+v", m)
		}
	})
	t.Run("relay before auth refused", func(t *testing.T) {
		ws := rawJoin(t, base, "run1", "mallory", nil)
		if err := ws.WriteJSON(Message{Type: TypeOffer, To: "alice", Data: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
		if m := readUntilClose(t, ws); m.Code != CodeAuth {
			t.Fatalf("offer before auth: got %+v", m)
		}
	})
}

func TestRelayAndMembership(t *testing.T) {
	var mu sync.Mutex
	var events []Event
	_, base := startServer(t, func(c *Config) {
		c.OnMembership = func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }
	})
	a := dial(t, base, "run", "a")
	if w := recvType(t, a, TypeWelcome); len(w.Peers) != 0 {
		t.Fatalf("first peer's welcome lists %v", w.Peers)
	}
	b := dial(t, base, "run", "b")
	if w := recvType(t, b, TypeWelcome); len(w.Peers) != 1 || w.Peers[0] != "a" {
		t.Fatalf("b's welcome lists %v, want [a]", w.Peers)
	}
	if j := recvType(t, a, TypeJoin); j.From != "b" {
		t.Fatalf("a saw join of %q, want b", j.From)
	}
	ctx := context.Background()
	if err := a.Send(ctx, Message{Type: TypeOffer, To: "b", Data: json.RawMessage(`{"sdp":"x"}`)}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-b.Signals("a"):
		if m.Type != TypeOffer || m.From != "a" || string(m.Data) != `{"sdp":"x"}` {
			t.Fatalf("b got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("offer not relayed")
	}
	if err := b.Send(ctx, Message{Type: TypeMessage, To: "a", Data: json.RawMessage(`"hi"`)}); err != nil {
		t.Fatal(err)
	}
	if m := recvType(t, a, TypeMessage); m.From != "b" || string(m.Data) != `"hi"` {
		t.Fatalf("a got %+v", m)
	}
	// Sending to an absent peer is an error reply, not a disconnect.
	if err := a.Send(ctx, Message{Type: TypeMessage, To: "nobody", Data: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	if m := recvType(t, a, TypeError); m.Code != CodeNoPeer {
		t.Fatalf("send to absent peer: got %+v", m)
	}
	if got := a.Peers(); len(got) != 1 || got[0] != "b" {
		t.Fatalf("a.Peers() = %v, want [b]", got)
	}
	b.Close()
	if l := recvType(t, a, TypeLeave); l.From != "b" {
		t.Fatalf("a saw leave of %q", l.From)
	}
	if got := a.Peers(); len(got) != 0 {
		t.Fatalf("a.Peers() after leave = %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []Event{{EventJoin, "run", "a"}, {EventJoin, "run", "b"}, {EventLeave, "run", "b"}}
	if len(events) != len(want) {
		t.Fatalf("OnMembership saw %v, want %v", events, want)
	}
	for i := range want {
		if events[i] != want[i] {
			t.Fatalf("OnMembership saw %v, want %v", events, want)
		}
	}
}

func TestLocalCoordinator(t *testing.T) {
	s, base := startServer(t, nil)
	coord, err := s.Attach("run", "coordinator")
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	p := dial(t, base, "run", "stage0")
	if w := recvType(t, p, TypeWelcome); len(w.Peers) != 1 || w.Peers[0] != "coordinator" {
		t.Fatalf("peer's welcome lists %v", w.Peers)
	}
	if j := recvType(t, coord, TypeJoin); j.From != "stage0" {
		t.Fatalf("coordinator saw join of %q", j.From)
	}
	if err := coord.Send(context.Background(), Message{Type: TypeMessage, To: "stage0", Data: json.RawMessage(`{"assign":[0,2]}`)}); err != nil {
		t.Fatal(err)
	}
	if m := recvType(t, p, TypeMessage); m.From != "coordinator" {
		t.Fatalf("peer got %+v", m)
	}
	if err := p.Send(context.Background(), Message{Type: TypeMessage, To: "coordinator", Data: json.RawMessage(`"ready"`)}); err != nil {
		t.Fatal(err)
	}
	if m := recvType(t, coord, TypeMessage); string(m.Data) != `"ready"` {
		t.Fatalf("coordinator got %+v", m)
	}
	p.Close()
	recvType(t, coord, TypeLeave)
}

func TestLimits(t *testing.T) {
	_, base := startServer(t, func(c *Config) { c.MaxPeersPerRoom = 2; c.MaxRooms = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dial(t, base, "run", "a")
	opt := ClientOptions{Key: testKey, Logger: quietLogger()}
	if _, err := DialOptions(ctx, base+"/run", "a", "", opt); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "already in room") {
		t.Fatalf("duplicate ID: got %v", err)
	}
	dial(t, base, "run", "b")
	if _, err := DialOptions(ctx, base+"/run", "c", "", opt); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "full") {
		t.Fatalf("third peer in a room of 2: got %v", err)
	}
	if _, err := DialOptions(ctx, base+"/other", "c", "", opt); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "rooms") {
		t.Fatalf("second room on a server of 1: got %v", err)
	}
	if _, err := DialOptions(ctx, base+"/bad%20room", "c", "", opt); err == nil {
		t.Fatal("room with a space accepted")
	}
}

func TestMaxConns(t *testing.T) {
	_, base := startServer(t, func(c *Config) { c.MaxConns = 2 })
	rawJoin(t, base, "run", "x", nil) // unauthenticated sockets count too
	dial(t, base, "run", "a")
	_, err := DialOptions(context.Background(), base+"/run", "b", "", ClientOptions{Key: testKey, Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("third connection on a server of 2: got %v, want HTTP 503", err)
	}
}

// TestGarbageIsolated sends each kind of junk on its own authenticated socket
// and checks the offender is told and dropped while a and b keep talking.
func TestGarbageIsolated(t *testing.T) {
	_, base := startServer(t, func(c *Config) { c.RatePerSecond = 50; c.RateBurst = 20 })
	a := dial(t, base, "run", "a")
	b := dial(t, base, "run", "b")
	recvType(t, a, TypeJoin)

	check := func(t *testing.T) {
		t.Helper()
		data := json.RawMessage(`"` + t.Name() + `"`)
		if err := a.Send(context.Background(), Message{Type: TypeMessage, To: "b", Data: data}); err != nil {
			t.Fatalf("a can no longer send: %v", err)
		}
		if m := recvType(t, b, TypeMessage); string(m.Data) != string(data) {
			t.Fatalf("b got %s, want %s", m.Data, data)
		}
	}
	cases := []struct {
		name string
		send func(ws *websocket.Conn) error
		code string
	}{
		{"binary junk", func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.BinaryMessage, []byte{0xff, 0x00, 0x13, 0x37})
		}, CodeBadMessage},
		{"huge message", func(ws *websocket.Conn) error {
			// The server stops reading at the limit and hangs up, so the
			// write itself may see a reset.
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","to":"b","data":"`+strings.Repeat("x", 200<<10)+`"}`))
			return nil
		}, ""},
		{"bad JSON", func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"offer","to":`))
		}, CodeBadMessage},
		{"unknown type", func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"rm -rf","to":"b"}`))
		}, CodeBadMessage},
		{"unknown field", func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","to":"b","admin":true}`))
		}, CodeBadMessage},
		{"spoofed from", func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","to":"b","from":"a"}`))
		}, CodeBadMessage},
		{"flood", func(ws *websocket.Conn) error {
			for i := 0; i < 500; i++ {
				if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","to":"evil","data":1}`)); err != nil {
					return nil // the server may hang up mid-flood
				}
			}
			return nil
		}, CodeRate},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws := rawJoin(t, base, "run", "evil", testKey)
			recvType(t, a, TypeJoin)
			if err := tc.send(ws); err != nil {
				t.Fatal(err)
			}
			if tc.code != "" {
				if m := readUntilClose(t, ws); m.Code != tc.code {
					t.Fatalf("offender was told %+v, want code %s", m, tc.code)
				}
			}
			if l := recvType(t, a, TypeLeave); l.From != "evil" {
				t.Fatalf("a saw leave of %q", l.From)
			}
			check(t)
		})
	}
	t.Run("garbage before auth", func(t *testing.T) {
		ws := rawJoin(t, base, "run", "evil", nil)
		_ = ws.WriteMessage(websocket.TextMessage, []byte("\x00\x01 not json"))
		if m := readUntilClose(t, ws); m.Code != CodeBadMessage {
			t.Fatalf("got %+v", m)
		}
		check(t)
	})
}

// TestNoLeaks checks that a server with clients, once everything is
// closed, leaves no goroutines behind.
func TestNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		s, err := NewServer(Config{Key: testKey, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(s)
		base := "ws" + strings.TrimPrefix(hs.URL, "http")
		var cs []*Client
		for _, id := range []string{"a", "b", "c"} {
			c, err := DialOptions(context.Background(), base+"/run", id, "", ClientOptions{Key: testKey, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		cs[0].Close()
		s.Close() // drops b and c from the server side
		for _, c := range cs[1:] {
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("client not told that the server closed")
			}
			c.Close()
		}
		hs.Close()
	}()
	waitGoroutines(t, before)
}

func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines after close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:n])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"challenge","nonce":"AAAA"}`,
		`{"type":"auth","from":"a","proof":"00ff"}`,
		`{"type":"welcome","peers":["a","b"]}`,
		`{"type":"offer","to":"b","data":{"sdp":"v=0"}}`,
		`{"type":"error","code":"auth","error":"x"}`,
		`{"type":"join","from":"a"} {}`,
		`{"type":"message","to":"../etc"}`,
		`[]`, `null`, ``, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b, DefaultMaxMessageBytes)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error %v does not wrap ErrBadMessage", err)
			}
			return
		}
		// What decodes must re-encode and decode to the same message.
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeMessage(out, 1<<20); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", out, err)
		}
	})
}

// TestServeShutdown: Serve runs until its context ends, then drops peers
// and returns nil.
func TestServeShutdown(t *testing.T) {
	s, err := NewServer(Config{Key: testKey, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c := dial(t, "ws://"+ln.Addr().String(), "run", "a")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client not disconnected by the shutdown")
	}
	if err := ListenAndServe(context.Background(), "256.0.0.1:1", Config{Key: testKey}); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("ListenAndServe on a bad address: %v", err)
	}
	if _, err := NewServer(Config{}); err == nil || !strings.Contains(err.Error(), "DeriveKey") {
		t.Fatalf("NewServer without a key: %v", err)
	}
}
