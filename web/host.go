package web

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// hostGuard decides which Host headers the view answers. A browser sends
// the name from its address bar, so a page on another site that points its
// own domain at this machine (DNS rebinding) arrives with that domain, and
// same-origin rules would let it read the answer; refusing names that are
// not this server's closes that hole. Names an attacker cannot choose are
// allowed: this machine's host names, "localhost" on a loopback
// connection, and the IP the request came in on.
type hostGuard struct {
	names map[string]bool // machine names and Options.AllowedHosts
	log   *slog.Logger

	mu      sync.Mutex
	lastLog time.Time
}

func newHostGuard(allowed []string, log *slog.Logger) *hostGuard {
	g := &hostGuard{names: map[string]bool{}, log: log}
	if name, err := os.Hostname(); err == nil && name != "" {
		name = normalHost(name)
		g.names[name] = true
		short, _, dotted := strings.Cut(name, ".")
		g.names[short] = true
		if !dotted {
			g.names[name+".local"] = true // its mDNS name
		}
	}
	for _, a := range allowed {
		if h := normalHost(a); h != "" {
			g.names[h] = true
		}
	}
	return g
}

// normalHost lowercases a Host header or name and drops the port, the
// brackets of an IPv6 literal and a trailing dot.
func normalHost(h string) string {
	h = strings.TrimSpace(h)
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// localIP is the address the request's connection came in on; nil when the
// handler runs outside an http.Server (then it counts as loopback).
func localIP(r *http.Request) net.IP {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return nil
	}
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return nil
	}
	if v4 := tcp.IP.To4(); v4 != nil {
		return v4
	}
	return tcp.IP
}

func (g *hostGuard) allowed(r *http.Request) bool {
	host := normalHost(r.Host)
	if host == "" {
		return false // HTTP/1.0 without Host: nothing to check against
	}
	if g.names[host] {
		return true
	}
	lip := localIP(r)
	loopback := lip == nil || lip.IsLoopback()
	if ip := net.ParseIP(host); ip != nil {
		return lip != nil && ip.Equal(lip) || loopback && ip.IsLoopback()
	}
	return loopback && (host == "localhost" || strings.HasSuffix(host, ".localhost"))
}

// wrap refuses requests for other hosts with 421 Misdirected Request.
func (g *hostGuard) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.allowed(r) {
			h.ServeHTTP(w, r)
			return
		}
		here := "this server's address"
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			here = "http://" + a.String() + "/"
		}
		g.logRefusal(r)
		http.Error(w, fmt.Sprintf("web: the live view does not answer to host %.100q: open it at %s, or add the name to web.Options.AllowedHosts (this check keeps other web sites from reading the run through DNS rebinding)", r.Host, here), http.StatusMisdirectedRequest)
	})
}

// logRefusal logs at most one refusal a minute: a rebinding page may
// retry in a loop.
func (g *hostGuard) logRefusal(r *http.Request) {
	g.mu.Lock()
	now := time.Now()
	due := now.Sub(g.lastLog) >= time.Minute
	if due {
		g.lastLog = now
	}
	g.mu.Unlock()
	if due {
		g.log.Warn("web: refused a request for another host (a misconfigured proxy, or a web page trying DNS rebinding); add the name to web.Options.AllowedHosts if it is yours",
			"host", r.Host, "remote", r.RemoteAddr, "path", r.URL.Path)
	}
}
