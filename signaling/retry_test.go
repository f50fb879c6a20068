package signaling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestBackoff(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		n        int
		u        float64
		min, max time.Duration // inclusive bounds of the wait
	}{
		{1, 0, 50 * ms, 50 * ms},
		{1, 0.999, 99 * ms, 100 * ms},
		{2, 0.5, 150 * ms, 150 * ms},
		{4, 0, 400 * ms, 400 * ms},
		{5, 0.999, 999 * ms, 1000 * ms}, // 1.6 s capped at 1 s
		{60, 0, 500 * ms, 500 * ms},     // no overflow however long it fails
	} {
		t.Run(fmt.Sprintf("n=%d/u=%g", tc.n, tc.u), func(t *testing.T) {
			if got := backoff(tc.n, 100*ms, time.Second, tc.u); got < tc.min || got > tc.max {
				t.Fatalf("backoff = %v, want %v–%v", got, tc.min, tc.max)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"wrong secret", &refusal{sentinel: ErrAuth, code: CodeAuth, text: "wrong secret"}, false},
		{"room full", &refusal{sentinel: ErrRefused, code: CodeFull, text: "room full"}, true},
		{"duplicate ID", &refusal{sentinel: ErrRefused, code: CodeDuplicate}, true},
		{"bad message", &refusal{sentinel: ErrRefused, code: CodeBadMessage}, false},
		{"HTTP 503", &HTTPError{StatusCode: 503}, true},
		{"HTTP 429", &HTTPError{StatusCode: 429}, true},
		{"HTTP 502 from a proxy", &HTTPError{StatusCode: 502}, true},
		{"HTTP 404: not a room", &HTTPError{StatusCode: 404}, false},
		{"HTTP 400: bad room", &HTTPError{StatusCode: 400}, false},
		{"connection refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, true},
		{"network unreachable", fmt.Errorf("dial: %w", syscall.ENETUNREACH), true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"EOF in the handshake", fmt.Errorf("read challenge: %w", io.ErrUnexpectedEOF), true},
		{"handshake timeout", context.DeadlineExceeded, true},
		{"no such host", &net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}, false},
		{"DNS server down", &net.DNSError{Err: "server misbehaving", IsTemporary: true}, true},
		{"protocol mismatch", fmt.Errorf("%w: expected a challenge", ErrBadMessage), false},
		{"server closed", &websocket.CloseError{Code: websocket.CloseGoingAway}, true},
		{"anything else", errors.New("something new"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, got := retryable(fmt.Errorf("signaling: dial: %w", tc.err))
			if got != tc.want || reason == "" {
				t.Fatalf("retryable = %v (%q), want %v", got, reason, tc.want)
			}
		})
	}
}

// freeAddr returns a loopback address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func fastRetry(sink *logSink) RetryOptions {
	return RetryOptions{
		Client:       ClientOptions{Key: testKey, Logger: sink.logger()},
		InitialDelay: 20 * time.Millisecond,
		MaxDelay:     200 * time.Millisecond,
		MaxElapsed:   20 * time.Second,
	}
}

// TestDialRetryLateServer: a peer started before its server keeps trying,
// logs why, and joins soon after the server comes up.
func TestDialRetryLateServer(t *testing.T) {
	addr := freeAddr(t)
	var sink logSink
	done := goDialRetry("ws://"+addr+"/run", "early", fastRetry(&sink))
	time.Sleep(700 * time.Millisecond)
	s, err := NewServer(Config{Key: testKey, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	r := waitDial(t, done, "peer started before its server")
	dial(t, "ws://"+addr, "run", "late")
	if j := recvType(t, r.c, TypeJoin); j.From != "late" {
		t.Fatalf("early peer saw join of %q", j.From)
	}
	retries := sink.lines(t, "msg", "signaling: dial failed; retrying")
	if len(retries) < 3 {
		t.Fatalf("%d retry lines in 0.7 s of refused connections, want several", len(retries))
	}
	for _, r := range retries {
		if !strings.Contains(r["reason"].(string), "connection refused") || r["attempt"] == nil || r["retry_in"] == nil {
			t.Fatalf("retry line %v, want attempt, retry_in and reason \"connection refused …\"", r)
		}
	}
	if joined := sink.lines(t, "msg", "signaling: joined after retrying"); len(joined) != 1 {
		t.Fatalf("join after retrying logged %d times", len(joined))
	}
	t.Logf("%d attempts refused; joined %v after the server started (MaxDelay 200 ms)", len(retries), r.at.Sub(up).Round(time.Millisecond))
}

// goDialRetry runs DialRetry in the background.
func goDialRetry(url, id string, opt RetryOptions) <-chan dialResult {
	done := make(chan dialResult, 1)
	go func() {
		c, err := DialRetry(context.Background(), url, id, "", opt)
		done <- dialResult{c, err, time.Now()}
	}()
	return done
}

type dialResult struct {
	c   *Client
	err error
	at  time.Time
}

func waitDial(t *testing.T, done <-chan dialResult, what string) dialResult {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: DialRetry did not return within 10 s", what)
	}
	panic("unreachable")
}

// TestDialRetryServerFull: a peer refused because the server is full
// (HTTP 503) retries, logs that the server was busy, and joins as soon as
// a member leaves.
func TestDialRetryServerFull(t *testing.T) {
	_, base := serve(t, Config{Key: testKey, Logger: quietLogger(), MaxConns: 2})
	a := dial(t, base, "run", "a")
	b := dial(t, base, "run", "b")
	var sink logSink
	done := goDialRetry(base+"/run", "c", fastRetry(&sink))
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("third peer on a server of 2 got %v, %v", r.c, r.err)
	default:
	}
	left := time.Now()
	a.Close()
	r := waitDial(t, done, "third peer after a member left")
	if j := recvType(t, b, TypeJoin); j.From != "c" {
		t.Fatalf("b saw join of %q", j.From)
	}
	retries := sink.lines(t, "msg", "signaling: dial failed; retrying")
	if len(retries) == 0 {
		t.Fatal("no retry was logged")
	}
	for _, l := range retries {
		if !strings.Contains(l["reason"].(string), "HTTP 503") || !strings.Contains(l["err"].(string), "Config.MaxConns") {
			t.Fatalf("retry line %v, want it to say the server is busy (HTTP 503, Config.MaxConns)", l)
		}
	}
	t.Logf("%d refusals, then joined %v after a member left (MaxDelay 200 ms)", len(retries), r.at.Sub(left).Round(time.Millisecond))
}

// TestDialRetryUnderFlood: under the flood of TestFloodFromOneAddress, on
// a server of 20 slots that the flood's address (16, its limit) and
// members (4) fill, peers joining with DialRetry from 127.0.0.1 get in, a
// fifth one waits, refused as busy, and takes the slot a member frees:
// the flood cannot take it.
func TestDialRetryUnderFlood(t *testing.T) {
	const authTimeout = time.Second
	s, base := serve(t, Config{Key: testKey, Logger: quietLogger(), MaxConns: 20, ReservedConns: 4, AuthTimeout: authTimeout})
	ctx, cancel := context.WithCancel(context.Background())
	var st floodStats
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for range 2 * s.cfg.MaxUnauthPerAddr {
		wg.Go(func() { floodSilent(ctx, "127.0.0.2", base+"/run", &st) })
		wg.Go(func() { floodSlow(ctx, "127.0.0.2", base+"/run", authTimeout*8/10, &st) })
	}
	time.Sleep(200 * time.Millisecond)
	var sink logSink
	var members []*Client
	for i := range 4 {
		t0 := time.Now()
		r := waitDial(t, goDialRetry(base+"/run", fmt.Sprintf("m%d", i), fastRetry(&sink)), fmt.Sprintf("member %d", i))
		t.Logf("member %d joined in %v", i, r.at.Sub(t0).Round(time.Microsecond))
		members = append(members, r.c)
	}

	var late logSink
	done := goDialRetry(base+"/run", "fifth", fastRetry(&late))
	time.Sleep(500 * time.Millisecond)
	left := time.Now()
	members[0].Close()
	r := waitDial(t, done, "fifth peer")
	if j := recvType(t, members[3], TypeJoin); j.From != "fifth" { // m3 joined last
		t.Fatalf("member m3 saw join of %q", j.From)
	}
	retries := late.lines(t, "msg", "signaling: dial failed; retrying")
	for _, l := range retries {
		if !strings.Contains(l["reason"].(string), "HTTP 503") {
			t.Fatalf("retry line %v, want only \"server busy (HTTP 503)\"", l)
		}
	}
	if r.at.Before(left) {
		// Possible, not expected: the flood's sockets come and go, and the
		// retry may hit a moment when one of its 16 is being replaced.
		t.Logf("fifth peer got in through a gap in the flood before a member left, after %d refusals", len(retries))
	} else {
		t.Logf("fifth peer: %d refusals, joined %v after a member left; flood: %d upgrades, %d × 429", len(retries), r.at.Sub(left).Round(time.Millisecond), st.upgraded.Load(), st.refused429.Load())
	}
	s.mu.Lock()
	unauth := queueLen(s.unauthBy["127.0.0.2"])
	s.mu.Unlock()
	if unauth > s.cfg.MaxUnauthPerAddr {
		t.Fatalf("flood holds %d unauthenticated sockets, limit %d", unauth, s.cfg.MaxUnauthPerAddr)
	}
}

// TestDialRetryGivesUp: what waiting cannot cure returns at once and says
// so; the rest stops at MaxElapsed, MaxAttempts or ctx.
func TestDialRetryGivesUp(t *testing.T) {
	_, base := startServer(t, nil)
	notRoom := httptest.NewServer(http.NotFoundHandler())
	defer notRoom.Close()
	nobody := "ws://" + freeAddr(t) + "/run"
	for _, tc := range []struct {
		name   string
		url    string
		secret string
		opt    func(*RetryOptions)
		ctx    func() (context.Context, context.CancelFunc)
		is     []error
		says   string
		maxDur time.Duration
		tries  int // retry lines expected; -1 = some
	}{
		{name: "wrong secret", url: base + "/run", secret: "guess", is: []error{ErrAuth},
			says: "not retried: the server refuses this secret", maxDur: time.Second},
		{name: "empty secret", url: base + "/run", secret: "", says: "empty run secret", maxDur: time.Second},
		{name: "not a signaling room", url: "ws" + strings.TrimPrefix(notRoom.URL, "http") + "/run", secret: testSecret,
			says: "HTTP 404 Not Found", maxDur: time.Second},
		{name: "bad room", url: base + "/bad room", secret: testSecret, says: "room in URL", maxDur: time.Second},
		{name: "MaxElapsed", url: nobody, secret: testSecret, opt: func(o *RetryOptions) { o.MaxElapsed = 300 * time.Millisecond },
			is: []error{ErrGaveUp, syscall.ECONNREFUSED}, says: "attempts in", maxDur: 2 * time.Second, tries: -1},
		{name: "MaxAttempts", url: nobody, secret: testSecret, opt: func(o *RetryOptions) { o.MaxAttempts = 3 },
			is: []error{ErrGaveUp, syscall.ECONNREFUSED}, says: "3 attempts", maxDur: 2 * time.Second, tries: 2},
		{name: "ctx cancelled", url: nobody, secret: testSecret,
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(300*time.Millisecond, cancel)
				return ctx, cancel
			}, is: []error{context.Canceled, syscall.ECONNREFUSED}, says: "stopped after", maxDur: 2 * time.Second, tries: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sink logSink
			opt := fastRetry(&sink)
			opt.Client.Key = nil // derive from the secret under test
			opt.InitialDelay = 50 * time.Millisecond
			if tc.opt != nil {
				tc.opt(&opt)
			}
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tc.ctx != nil {
				ctx, cancel = tc.ctx()
			}
			defer cancel()
			t0 := time.Now()
			c, err := DialRetry(ctx, tc.url, "p", tc.secret, opt)
			took := time.Since(t0)
			if err == nil {
				c.Close()
				t.Fatal("DialRetry succeeded")
			}
			for _, target := range tc.is {
				if !errors.Is(err, target) {
					t.Errorf("error %q does not wrap %v", err, target)
				}
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
			if took > tc.maxDur {
				t.Errorf("took %v, want under %v", took, tc.maxDur)
			}
			n := len(sink.lines(t, "msg", "signaling: dial failed; retrying"))
			if tc.tries >= 0 && n != tc.tries || tc.tries < 0 && n == 0 {
				t.Errorf("%d retry lines, want %d (-1: some)", n, tc.tries)
			}
		})
	}
}
