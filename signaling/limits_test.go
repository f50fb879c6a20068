package signaling

import (
	"bufio"
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// logSink is a real slog JSON handler writing into memory, so tests can
// read back what an operator would see.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(s, nil)) }

// lines returns the records whose attribute key equals value.
func (s *logSink) lines(t *testing.T, key, value string) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.buf.Bytes()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Bytes(), err)
		}
		if v, _ := rec[key].(string); v == value {
			out = append(out, rec)
		}
	}
	return out
}

// sumCount adds the "count" attributes of limit lines.
func sumCount(recs []map[string]any) int {
	n := 0
	for _, r := range recs {
		c, _ := r["count"].(float64)
		n += int(c)
	}
	return n
}

// serve runs a server with Serve on a real loopback listener (so the
// per-address limit before the upgrade applies too) and returns its
// ws:// base URL.
func serve(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	s, err := NewServer(cfg)
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, "ws://" + ln.Addr().String()
}

// dialerFrom returns a websocket dialer whose sockets leave from ip, a
// loopback address (all of 127/8 is loopback on Linux), so one test
// process can be many remote addresses.
func dialerFrom(ip string) *websocket.Dialer {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &websocket.Dialer{NetDialContext: d.DialContext, HandshakeTimeout: 5 * time.Second}
}

// floodStats counts what flooders saw.
type floodStats struct {
	refused429 atomic.Int64 // HTTP 429 answers
	upgraded   atomic.Int64 // sockets that got a challenge
	wrongProof atomic.Int64 // wrong proofs the server answered
	tcpOpened  atomic.Int64 // raw TCP connections accepted by the kernel
}

// floodSilent opens websockets from ip and never answers the challenge,
// re-opening as soon as the server closes one or refuses.
func floodSilent(ctx context.Context, ip, url string, st *floodStats) {
	d := dialerFrom(ip)
	for ctx.Err() == nil {
		ws, resp, err := d.DialContext(ctx, url, nil)
		if err != nil {
			if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
				st.refused429.Add(1)
			}
			continue
		}
		st.upgraded.Add(1)
		stop := context.AfterFunc(ctx, func() { ws.Close() })
		for { // hold it until the server hangs up
			if _, _, err := ws.ReadMessage(); err != nil {
				break
			}
		}
		stop()
		ws.Close()
	}
}

// floodSlow reads the challenge, waits most of the auth deadline and then
// answers with a proof made from a guessed secret.
func floodSlow(ctx context.Context, ip, url string, wait time.Duration, st *floodStats) {
	d := dialerFrom(ip)
	for i := 0; ctx.Err() == nil; i++ {
		ws, resp, err := d.DialContext(ctx, url, nil)
		if err != nil {
			if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
				st.refused429.Add(1)
			}
			continue
		}
		st.upgraded.Add(1)
		stop := context.AfterFunc(ctx, func() { ws.Close() })
		var ch Message
		if ws.ReadJSON(&ch) == nil {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			nonce, _ := decodeNonce(ch.Nonce)
			id := fmt.Sprintf("guess-%d", i)
			if ws.WriteJSON(Message{Type: TypeAuth, From: id, Proof: Proof(make([]byte, KeySize), nonce, "run", id)}) == nil {
				var m Message
				if ws.ReadJSON(&m) == nil && m.Code == CodeAuth {
					st.wrongProof.Add(1)
				}
			}
		}
		stop()
		ws.Close()
	}
}

// floodTCP opens TCP connections from ip and sends nothing.
func floodTCP(ctx context.Context, ip, addr string, st *floodStats) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	buf := make([]byte, 1)
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			continue
		}
		st.tcpOpened.Add(1)
		stop := context.AfterFunc(ctx, func() { c.Close() })
		_, _ = c.Read(buf) // returns when the server closes it
		stop()
		c.Close()
	}
}

// joinAndTalk joins a and b to a fresh room from 127.0.0.1, sends a message
// each way and returns how long the slower of the two joins took.
func joinAndTalk(t *testing.T, base, room string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opt := ClientOptions{Key: testKey, Logger: quietLogger()}
	var worst time.Duration
	join := func(id string) *Client {
		t0 := time.Now()
		c, err := DialOptions(ctx, base+"/"+room, id, "", opt)
		if err != nil {
			t.Fatalf("legitimate peer %s could not join %s under the flood: %v", id, room, err)
		}
		worst = max(worst, time.Since(t0))
		return c
	}
	a := join("a")
	defer a.Close()
	b := join("b")
	defer b.Close()
	if err := a.Send(ctx, Message{Type: TypeMessage, To: "b", Data: json.RawMessage(`"ping"`)}); err != nil {
		t.Fatal(err)
	}
	if m := recvType(t, b, TypeMessage); string(m.Data) != `"ping"` {
		t.Fatalf("b got %s", m.Data)
	}
	if err := b.Send(ctx, Message{Type: TypeMessage, To: "a", Data: json.RawMessage(`"pong"`)}); err != nil {
		t.Fatal(err)
	}
	if m := recvType(t, a, TypeMessage); string(m.Data) != `"pong"` {
		t.Fatalf("a got %s", m.Data)
	}
	return worst
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestFloodFromOneAddress: one address floods the server with more
// websockets than MaxConns that never authenticate, websockets that answer
// late with a guessed
// secret, and a second one with TCP connections that send nothing, while
// peers from 127.0.0.1 join rooms and talk. At the default per-address
// limit, every legitimate join must succeed at the first try, the flooders must
// never hold more than MaxUnauthPerAddr sockets, and each limit must log
// a few summary lines whose counts add up to what the flooders saw.
func TestFloodFromOneAddress(t *testing.T) {
	const authTimeout = time.Second
	const interval = 250 * time.Millisecond
	var sink logSink
	// MaxConns is cut to 64 so that a flood of a few goroutines can want
	// more sockets than the whole server holds without the flooders, in
	// this process, taking all the CPU.
	s, base := serve(t, Config{Key: testKey, Logger: sink.logger(), MaxConns: 64, AuthTimeout: authTimeout, LimitLogInterval: interval})
	perAddr := s.cfg.MaxUnauthPerAddr

	var quiet []time.Duration
	for i := range 5 {
		quiet = append(quiet, joinAndTalk(t, base, fmt.Sprintf("quiet%d", i)))
	}

	ctx, cancel := context.WithCancel(context.Background())
	var st floodStats
	var wg sync.WaitGroup
	url := base + "/run"
	// More silent sockets wanted than the whole server holds: before the
	// limits, they alone locked every peer out.
	for range 2 * perAddr {
		wg.Go(func() { floodSlow(ctx, "127.0.0.2", url, authTimeout*8/10, &st) })
		wg.Go(func() { floodTCP(ctx, "127.0.0.3", strings.TrimPrefix(base, "ws://"), &st) })
	}
	time.Sleep(50 * time.Millisecond) // the slow ones take some slots first
	for range s.cfg.MaxConns + 16 {
		wg.Go(func() { floodSilent(ctx, "127.0.0.2", url, &st) })
	}
	// Watch the server's own counts while the flood runs.
	var maxUnauth, maxPre int
	wg.Go(func() {
		for ctx.Err() == nil {
			s.mu.Lock()
			maxUnauth = max(maxUnauth, queueLen(s.unauthBy["127.0.0.2"]))
			maxPre = max(maxPre, s.preBy["127.0.0.3"])
			s.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	})
	floodStart := time.Now()
	time.Sleep(300 * time.Millisecond) // let the flood take every slot it can
	var flooded []time.Duration
	for i := 0; time.Since(floodStart) < 2500*time.Millisecond; i++ {
		flooded = append(flooded, joinAndTalk(t, base, fmt.Sprintf("flooded%d", i)))
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	floodFor := time.Since(floodStart)
	time.Sleep(interval + 100*time.Millisecond) // the last summaries are due

	t.Logf("join (slower of two peers): median %v, max %v without flood; median %v, max %v over %d rounds under the flood",
		median(quiet), slices.Max(quiet), median(flooded), slices.Max(flooded), len(flooded))
	t.Logf("flood over %v: %d upgrades, %d × HTTP 429, %d wrong proofs answered, %d raw TCP connections; most held at once: %d websockets (limit %d), %d idle TCP (limit %d)",
		floodFor.Round(time.Millisecond), st.upgraded.Load(), st.refused429.Load(), st.wrongProof.Load(), st.tcpOpened.Load(), maxUnauth, perAddr, maxPre, perAddr)

	if maxUnauth != perAddr || maxPre != perAddr {
		t.Errorf("flooders held at most %d websockets and %d idle TCP connections; want exactly the limit %d (reached, never passed)", maxUnauth, maxPre, perAddr)
	}
	if st.refused429.Load() == 0 || st.upgraded.Load() == 0 || st.wrongProof.Load() == 0 {
		t.Fatalf("the flood did not do what it should: %d upgrades, %d refusals, %d wrong proofs", st.upgraded.Load(), st.refused429.Load(), st.wrongProof.Load())
	}
	maxLines := int(floodFor/interval) + 2
	for _, tc := range []struct {
		limit string
		addrs []string // the busiest address each line may name
		want  int64    // exact total of the lines' counts, or -1
	}{
		{limitPerAddr.String(), []string{"127.0.0.2"}, st.refused429.Load()},
		{limitAuthTimeout.String(), []string{"127.0.0.2"}, -1},
		{limitAuthFailed.String(), []string{"127.0.0.2"}, st.wrongProof.Load()},
		// The websocket flooders, hammering, also hold more than the
		// limit of connections before their upgrade: either address may
		// be the busiest.
		{limitPreUpgrade.String(), []string{"127.0.0.3", "127.0.0.2"}, -1},
	} {
		recs := sink.lines(t, "limit", tc.limit)
		if len(recs) == 0 || len(recs) > maxLines {
			t.Errorf("limit %s: %d log lines over %v, want 1–%d (one per %v, not one per socket)", tc.limit, len(recs), floodFor, maxLines, interval)
			continue
		}
		named := map[any]bool{}
		for _, r := range recs {
			named[r["addr"]] = true
			if !slices.Contains(tc.addrs, r["addr"].(string)) || r["level"] != "WARN" || r["field"] == "" {
				t.Errorf("limit %s: line %v, want a WARN naming one of %v and the Config field", tc.limit, r, tc.addrs)
			}
		}
		if len(tc.addrs) == 1 && !named[tc.addrs[0]] {
			t.Errorf("limit %s: no line names %s", tc.limit, tc.addrs[0])
		}
		// A flooder stopped at the end may not read the answer the server
		// counted, so the log may count up to one per flooder more.
		if got := int64(sumCount(recs)); tc.want >= 0 && (got < tc.want || got > tc.want+int64(2*perAddr)) {
			t.Errorf("limit %s: lines count %d events, flooders saw %d", tc.limit, got, tc.want)
		}
		t.Logf("limit %s: %d lines for %d events", tc.limit, len(recs), sumCount(recs))
	}
	if recs := sink.lines(t, "limit", limitConns.String()); len(recs) != 0 {
		t.Errorf("the flood from one address filled the server: %v", recs)
	}
}

// TestFloodFromManyAddresses: sockets that never authenticate, from more
// addresses than their share of MaxConns can hold, while members fill the
// reserved share: each newcomer with the secret still gets in (the oldest
// unauthenticated socket is closed for it), and no member is disconnected.
func TestFloodFromManyAddresses(t *testing.T) {
	var sink logSink
	cfg := Config{Key: testKey, Logger: sink.logger(), MaxConns: 256, ReservedConns: 64, MaxUnauthPerAddr: 8, LimitLogInterval: 250 * time.Millisecond}
	s, base := serve(t, cfg)
	share := cfg.MaxConns - cfg.ReservedConns

	ctx, cancel := context.WithCancel(context.Background())
	var st floodStats
	var wg sync.WaitGroup
	for i := range 32 { // 32 addresses × 8 = 256 sockets wanted, 192 allowed
		ip := fmt.Sprintf("127.0.1.%d", i+1)
		for range cfg.MaxUnauthPerAddr {
			wg.Go(func() {
				d := dialerFrom(ip)
				for ctx.Err() == nil {
					ws, _, err := d.DialContext(ctx, base+"/run", nil)
					if err == nil {
						st.upgraded.Add(1)
						stop := context.AfterFunc(ctx, func() { ws.Close() })
						for {
							if _, _, err := ws.ReadMessage(); err != nil {
								break
							}
						}
						stop()
						ws.Close()
					}
					// A patient flood: it re-opens what the server closes.
					select {
					case <-time.After(50 * time.Millisecond):
					case <-ctx.Done():
					}
				}
			})
		}
	}
	defer func() { cancel(); wg.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := s.unauthN
		s.mu.Unlock()
		if n >= share {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flood holds %d unauthenticated sockets after 5 s, want the share %d", n, share)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Members take the whole reserve (62 here, 2 more below); every one
	// gets in only by pushing out a flood socket, and they must all stay.
	members := make([]*Client, 0, cfg.ReservedConns-2)
	for i := range cap(members) {
		room := fmt.Sprintf("run%d", i%2) // MaxPeersPerRoom is 64
		c, err := DialOptions(context.Background(), base+"/"+room, fmt.Sprintf("m%d", i), "", ClientOptions{Key: testKey, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("member %d could not join while %d unauthenticated sockets want in: %v", i, st.upgraded.Load(), err)
		}
		defer c.Close()
		members = append(members, c)
	}
	worst := joinAndTalk(t, base, "other")
	time.Sleep(500 * time.Millisecond)
	for i, c := range members {
		if err := c.Err(); err != nil {
			t.Fatalf("member m%d was disconnected by the flood: %v", i, err)
		}
	}
	s.mu.Lock()
	open, unauth := s.open, s.unauthN
	s.mu.Unlock()
	if open > cfg.MaxConns || unauth > share {
		t.Fatalf("%d sockets open (limit %d), %d unauthenticated (share %d)", open, cfg.MaxConns, unauth, share)
	}
	evicted := sink.lines(t, "limit", limitEvict.String())
	if len(evicted) == 0 {
		t.Fatal("no log line says unauthenticated sockets were closed to admit members")
	}
	t.Logf("%d members + 2 in another room joined (slowest of the last two %v) past %d flood sockets; %d open, %d unauthenticated; eviction log lines: %d", len(members), worst, st.upgraded.Load(), open, unauth, len(evicted))
}

// TestLimitLog: a burst logs its first event at once and the rest as one
// summary an interval later, with the right counts.
func TestLimitLog(t *testing.T) {
	var sink logSink
	l := newLimitLog(sink.logger(), 100*time.Millisecond)
	for i := range 100 {
		addr := "192.0.2.1"
		if i%10 == 0 {
			addr = "192.0.2.2"
		}
		l.note(limitPerAddr, addr, 16, "")
	}
	if got := sink.lines(t, "limit", limitPerAddr.String()); len(got) != 1 || got[0]["count"] != 1.0 || got[0]["addr"] != "192.0.2.2" {
		t.Fatalf("right after the burst: %v, want one line for the first event", got)
	}
	time.Sleep(200 * time.Millisecond)
	got := sink.lines(t, "limit", limitPerAddr.String())
	if len(got) != 2 || got[1]["count"] != 99.0 || got[1]["addr"] != "192.0.2.1" || got[1]["addr_count"] != 90.0 || got[1]["addrs"] != 2.0 || got[1]["max"] != 16.0 {
		t.Fatalf("after the interval: %v, want a second line summing the other 99 (90 from 192.0.2.1)", got)
	}
	l.note(limitAuthFailed, "192.0.2.3", 0, "mallory")
	l.note(limitAuthFailed, "192.0.2.3", 0, "mallory")
	l.stop() // flushes the pending summary
	l.note(limitAuthFailed, "192.0.2.3", 0, "mallory")
	if got := sink.lines(t, "limit", limitAuthFailed.String()); len(got) != 2 || sumCount(got) != 2 || got[1]["peer"] != "mallory" {
		t.Fatalf("auth failures: %v, want 2 lines counting 2 (none after stop)", got)
	}
}

func TestAddrKey(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"127.0.0.2:5555", "127.0.0.2"},
		{"[::ffff:192.0.2.7]:80", "192.0.2.7"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:443", "2001:db8:1:2::/64"},
		{"[::1]:9", "::/64"},
		{"not-an-address", "not-an-address"},
	} {
		if got := addrKey(tc.remote); got != tc.want {
			t.Errorf("addrKey(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}

func TestConfigValidateLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"defaults", Config{}, ""},
		{"reserve of a tiny server is zero", Config{MaxConns: 2}, ""},
		{"reserve as large as the server", Config{MaxConns: 10, ReservedConns: 10}, "Config.ReservedConns = 10 with MaxConns = 10"},
		{"negative reserve", Config{ReservedConns: -1}, "Config.ReservedConns = -1"},
		{"negative per-address limit", Config{MaxUnauthPerAddr: -3}, "Config.MaxUnauthPerAddr = -3"},
		{"negative log interval", Config{LimitLogInterval: -time.Second}, "Config.LimitLogInterval = -1s"},
		{"negative auth timeout", Config{AuthTimeout: -time.Second}, "Config.AuthTimeout = -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Key = testKey
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error naming %q", err, tc.want)
			}
		})
	}
	d := (&Config{}).withDefaults()
	if d.MaxConns != 1024 || d.ReservedConns != 256 || d.MaxUnauthPerAddr != 16 || d.AuthTimeout != 3*time.Second || d.LimitLogInterval != 10*time.Second {
		t.Fatalf("defaults: %+v", d)
	}
}

// TestRefusalsSayWhy: a refused upgrade reaches the client as an
// HTTPError with the server's reason and its Retry-After hint.
func TestRefusalsSayWhy(t *testing.T) {
	_, base := startServer(t, func(c *Config) { c.MaxUnauthPerAddr = 1 })
	rawJoin(t, base, "run", "x", nil) // holds this address's one slot
	_, err := DialOptions(context.Background(), base+"/run", "a", "", ClientOptions{Key: testKey, Logger: quietLogger()})
	he, ok := errors.AsType[*HTTPError](err)
	if !ok || he.StatusCode != http.StatusTooManyRequests || he.RetryAfter != time.Second || !strings.Contains(he.Message, "127.0.0.1 already holds 1 sockets that have not authenticated (Config.MaxUnauthPerAddr)") {
		t.Fatalf("second socket from one address with MaxUnauthPerAddr = 1: got %v", err)
	}
}

func queueLen(q *list.List) int {
	if q == nil {
		return 0
	}
	return q.Len()
}

// TestAdmission steps the admission counts through a flood without any
// sockets: which request is admitted, refused by which limit, or admitted
// by closing whose socket.
func TestAdmission(t *testing.T) {
	s, err := NewServer(Config{Key: testKey, Logger: quietLogger(), MaxConns: 10, ReservedConns: 2, MaxUnauthPerAddr: 6})
	if err != nil {
		t.Fatal(err)
	}
	held := map[string][]*ticket{}
	type step struct {
		op     string // "conn ADDR", "auth ADDR" (its oldest), "close ADDR" (its oldest)
		want   limitKind
		victim string // address whose oldest socket is closed, or ""
	}
	steps := []step{
		// a floods up to its limit, b too: the share of 8 is full.
		{"conn a", 0, ""}, {"conn a", 0, ""}, {"conn a", 0, ""}, {"conn a", 0, ""}, {"conn a", 0, ""}, {"conn a", 0, ""},
		{"conn a", limitPerAddr, ""},
		{"conn b", 0, ""}, {"conn b", 0, ""},
		// c, holding none, takes the busiest address's oldest socket.
		{"conn c", 0, "a"},
		// a (5 now) is the busiest address: refused, it may not push out others.
		{"conn a", limitShare, ""},
		// b (2) may push out the busiest, a.
		{"conn b", 0, "a"},
		// c authenticates: its slot moves to the members' share, and
		// frees one in the unauthenticated share.
		{"auth c", 0, ""},
		{"conn c", 0, ""},
		{"conn c", 0, "a"},
		// a 3, b 3, c 2: a and b tie as the busiest; neither may push.
		{"conn a", limitShare, ""},
		{"conn b", limitShare, ""},
		{"conn d", 0, "a"},
		// a 2 < b 3: a pushes out b's oldest.
		{"conn a", 0, "b"},
		// Members (c, then a's three) and b 2, c 2, d 1: one slot left.
		{"auth a", 0, ""}, {"auth a", 0, ""}, {"auth a", 0, ""},
		{"conn e", 0, ""},
		{"conn f", limitConns, ""},
		{"close e", 0, ""},
		{"conn f", 0, ""},
	}
	for i, st := range steps {
		op, addr, _ := strings.Cut(st.op, " ")
		switch op {
		case "conn":
			s.mu.Lock()
			tk, refused, victim := s.admitLocked(addr)
			s.mu.Unlock()
			if refused != st.want {
				t.Fatalf("step %d %q: refused by %v, want %v", i, st.op, refused, st.want)
			}
			got := ""
			if victim != nil {
				got = victim.addr
				if q := held[got]; len(q) == 0 || q[0] != victim {
					t.Fatalf("step %d %q: evicted a socket of %s that is not its oldest", i, st.op, got)
				}
				held[got] = held[got][1:]
			}
			if got != st.victim {
				t.Fatalf("step %d %q: evicted a socket of %q, want %q", i, st.op, got, st.victim)
			}
			if tk != nil {
				held[addr] = append(held[addr], tk)
			}
		case "auth", "close":
			tk := held[addr][0]
			held[addr] = held[addr][1:]
			if op == "auth" && !s.promote(tk) {
				t.Fatalf("step %d %q: promote refused", i, st.op)
			}
			if op == "close" {
				s.release(tk)
			}
		}
		s.mu.Lock()
		open, unauth := s.open, s.unauthN
		s.mu.Unlock()
		if open > 10 || unauth > 8 {
			t.Fatalf("step %d %q: %d open (max 10), %d unauthenticated (max 8)", i, st.op, open, unauth)
		}
	}
}
