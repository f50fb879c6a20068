package web_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/narrowband/narrowband/web"
)

// logBuf collects a real slog text handler's output.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// serveOn runs the view's handler on ln until the test ends.
func serveOn(t *testing.T, ln net.Listener, opts web.Options) *web.Server {
	t.Helper()
	srv := web.New(opts)
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
	})
	return srv
}

// get fetches rawURL, optionally with another Host header.
func get(t *testing.T, rawURL, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %q): %v", rawURL, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestListenURL: the URL Listen returns names the address it is bound to
// and serves the page there; binds beyond loopback are warned about.
func TestListenURL(t *testing.T) {
	hostname, _ := os.Hostname()
	for _, tc := range []struct {
		addr     string
		urlHost  func(string) bool
		wantWarn string // "" = no warning
	}{
		{"127.0.0.1:0", func(h string) bool { return h == "127.0.0.1" }, ""},
		{"localhost:0", func(h string) bool { return net.ParseIP(h).IsLoopback() }, ""},
		{":0", notUnspecified(hostname), "listens on every interface"},
		{"0.0.0.0:0", notUnspecified(hostname), "listens on every interface"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			var log logBuf
			ln, u, err := web.Listen(tc.addr, log.logger())
			if err != nil {
				t.Fatal(err)
			}
			serveOn(t, ln, web.Options{Logger: log.logger()})
			pu, err := url.Parse(u)
			if err != nil || pu.Scheme != "http" || pu.Path != "/" {
				t.Fatalf("URL %q is not http://HOST:PORT/", u)
			}
			if !tc.urlHost(pu.Hostname()) {
				t.Errorf("bound %s, URL %s: the host does not name the bound address", ln.Addr(), u)
			}
			if pu.Port() != strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) {
				t.Errorf("URL %s has another port than the socket %s", u, ln.Addr())
			}
			code, body := get(t, u, "")
			if code != http.StatusOK || !strings.Contains(body, "<title>narrowband") {
				t.Fatalf("GET %s: %d %.200s", u, code, body)
			}
			warned := strings.Contains(log.String(), "level=WARN")
			switch {
			case tc.wantWarn == "" && warned:
				t.Errorf("unexpected warning for %s:\n%s", tc.addr, log.String())
			case tc.wantWarn != "" && !strings.Contains(log.String(), tc.wantWarn):
				t.Errorf("no warning %q for %s; log:\n%s", tc.wantWarn, tc.addr, log.String())
			case tc.wantWarn != "" && !strings.Contains(log.String(), `127.0.0.1:0`):
				t.Errorf("the warning for %s does not say what to set instead:\n%s", tc.addr, log.String())
			}
			t.Logf("%s → %s (bound %s)", tc.addr, u, ln.Addr())
		})
	}
}

// notUnspecified accepts this machine's host name or one of its interface
// addresses: a name someone can open, not 0.0.0.0 and not a made-up
// 127.0.0.1 (unless loopback is really all there is).
func notUnspecified(hostname string) func(string) bool {
	return func(h string) bool {
		if strings.EqualFold(h, hostname) {
			return true
		}
		ip := net.ParseIP(h)
		if ip == nil || ip.IsUnspecified() {
			return false
		}
		addrs, _ := net.InterfaceAddrs()
		nonLoopback := false
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if n.IP.Equal(ip) {
					return !ip.IsLoopback() || !nonLoopback
				}
				nonLoopback = nonLoopback || !n.IP.IsLoopback()
			}
		}
		return false
	}
}

// TestListenPortTaken: a taken port falls back to another, with a warning;
// an address that cannot be listened on is an error that says what to give.
func TestListenPortTaken(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var log logBuf
	ln, u, err := web.Listen(busy.Addr().String(), log.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().String() == busy.Addr().String() || !strings.HasPrefix(u, "http://127.0.0.1:") {
		t.Fatalf("wanted the busy %s, got %s (%s)", busy.Addr(), ln.Addr(), u)
	}
	if !strings.Contains(log.String(), "port is taken") || !strings.Contains(log.String(), busy.Addr().String()) {
		t.Fatalf("no warning naming the taken port:\n%s", log.String())
	}
	for _, bad := range []string{"256.0.0.1:80", "127.0.0.1", "127.0.0.1:http-nope"} {
		if _, _, err := web.Listen(bad, log.logger()); err == nil || !strings.Contains(err.Error(), "web: listen on") || !strings.Contains(err.Error(), "127.0.0.1:0") {
			t.Errorf("Listen(%q): %v, want an error that says what to give", bad, err)
		}
	}
}

// TestHostCheck sends real requests with forged Host headers: only names of
// this server are answered, on every endpoint; the run's data never goes
// to a name that is not.
func TestHostCheck(t *testing.T) {
	hostname, _ := os.Hostname()
	for _, bind := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
		t.Run(bind, func(t *testing.T) {
			var log logBuf
			ln, _, err := web.Listen(bind, log.logger())
			if err != nil {
				t.Fatal(err)
			}
			port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
			srv := serveOn(t, ln, web.Options{Logger: log.logger(), AllowedHosts: []string{"View.Example:8080"}})
			srv.SetRun(web.RunInfo{Name: "run-with-private-paths", Config: "data = \"/home/me/secret\""})
			base := "http://127.0.0.1:" + port // loopback traffic only
			for _, tc := range []struct {
				host string
				want int
			}{
				{"127.0.0.1:" + port, 200},
				{"localhost:" + port, 200},
				{"LocalHost.", 200},
				{"app.localhost:" + port, 200},
				{"[::1]:" + port, 200},
				{hostname + ":" + port, 200},
				{"view.example", 200}, // Options.AllowedHosts, port ignored
				{"attacker.example", 421},
				{"attacker.example:" + port, 421},
				{"localhost.attacker.example", 421},
				{"192.0.2.1:" + port, 421}, // an IP this request did not come in on
				{"127.0.0.1.nip.io:" + port, 421},
			} {
				for _, path := range []string{"/", "/api/snapshot", "/static/app.js"} {
					code, body := get(t, base+path, tc.host)
					if code != tc.want {
						t.Errorf("GET %s with Host %q: %d, want %d", path, tc.host, code, tc.want)
					}
					if code == http.StatusMisdirectedRequest {
						if strings.Contains(body, "secret") || strings.Contains(body, "run-with-private") {
							t.Errorf("refusal for Host %q leaks the run: %s", tc.host, body)
						}
						if !strings.Contains(body, "does not answer to host") || !strings.Contains(body, "AllowedHosts") {
							t.Errorf("refusal for Host %q does not say why and what to do: %s", tc.host, body)
						}
					}
				}
			}
			// The event stream is refused too, before it starts.
			if code, _ := get(t, base+"/events", "attacker.example"); code != 421 {
				t.Errorf("GET /events with a foreign Host: %d, want 421", code)
			}
			if !strings.Contains(log.String(), "refused a request for another host") {
				t.Errorf("refusals not logged:\n%s", log.String())
			}
			if n := strings.Count(log.String(), "refused a request for another host"); n != 1 {
				t.Errorf("%d log lines for the refusals, want 1 (at most one a minute)", n)
			}
		})
	}
	t.Run("HTTP/1.0 without Host", func(t *testing.T) {
		ln, _, err := web.Listen("127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		serveOn(t, ln, web.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /api/snapshot HTTP/1.0\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Fatalf("HTTP/1.0 request without Host: %s, want 421", resp.Status)
		}
	})
}
