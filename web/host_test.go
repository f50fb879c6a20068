package web

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestNormalHost(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:8080", "127.0.0.1"},
		{"[::1]:8080", "::1"},
		{"[::1]", "::1"},
		{"LocalHost.:80", "localhost"},
		{"Example.COM", "example.com"},
		{" vm ", "vm"},
		{"", ""},
	} {
		if got := normalHost(tc.in); got != tc.want {
			t.Errorf("normalHost(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzHostGuard feeds arbitrary Host headers, as a client may send, on a
// loopback and on a LAN connection: the guard must not panic, and what it
// lets through must be one of the names it means to allow.
func FuzzHostGuard(f *testing.F) {
	for _, s := range []string{"127.0.0.1:1", "localhost", "a.localhost:9", "[::1]:80", "[::1", "evil.example",
		"127.0.0.1.nip.io", "192.0.2.2:80", "::ffff:127.0.0.1", "[]", ":", "\x00", "LOCALHOST.", "view.example:1"} {
		f.Add(s)
	}
	g := newHostGuard([]string{"view.example"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.Fuzz(func(t *testing.T, host string) {
		for _, local := range []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP("192.0.2.2")} {
			r := (&http.Request{Host: host}).WithContext(context.WithValue(context.Background(), http.LocalAddrContextKey, &net.TCPAddr{IP: local, Port: 80}))
			if !g.allowed(r) {
				continue
			}
			h := normalHost(host)
			ip := net.ParseIP(h)
			ok := g.names[h] ||
				ip != nil && (ip.Equal(local) || local.IsLoopback() && ip.IsLoopback()) ||
				local.IsLoopback() && ip == nil && (h == "localhost" || strings.HasSuffix(h, ".localhost"))
			if !ok {
				t.Fatalf("Host %q allowed on a connection to %v", host, local)
			}
		}
	})
}
