package web

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Contribute is what a visitor's tab needs to join the run as a peer, and
// what it would take on: the web view offers it only when the run's owner
// set `[web] contribute = true` (SetContribute). The token is the room's
// join token (signaling.JoinToken), never the run's secret: it lets a tab
// join this room as a peer and nothing else.
type Contribute struct {
	Signal string   `json:"signal"` // ws://HOST:PORT/ROOM of the run's signaling server
	Token  string   `json:"token"`
	ICE    []string `json:"ice,omitempty"` // STUN servers the tab may use
	// Stage is the stage a tab would compute (the first vacant one), or
	// -1 when every stage is held and a tab would wait as a spare.
	Stage  int `json:"stage"`
	Stages int `json:"stages"`
	// Replica is which of the stage's Replicas (data-parallel copies) the
	// tab would be; 0 with one replica per stage.
	Replica  int    `json:"replica"`
	Replicas int    `json:"replicas"`
	Layers   string `json:"layers,omitempty"` // the stage's blocks, e.g. "blocks 2–3"
	// MemoryBytes is the run's estimate of a stage peer's memory.
	MemoryBytes int64 `json:"memory_bytes"`
	// TokensPerStep is batch × context: what one step of any stage covers.
	TokensPerStep int `json:"tokens_per_step"`
	// TabSpeed is how fast a tab computes a stage relative to a native
	// peer, as measured on the development machine (docs/browser.md); the
	// page multiplies the stage's current rate by it for its estimate.
	TabSpeed float64 `json:"tab_speed"`
	// StageTokensPerSecond is the offered stage's compute rate on its
	// current peer (tokens per busy second, latest step; 0 before one).
	StageTokensPerSecond float64 `json:"stage_tokens_per_second"`
}

// SetContribute turns the Contribute control on (c != nil) or off.
func (s *Server) SetContribute(c *Contribute) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if c == nil {
		s.contrib = nil
		return
	}
	cc := *c
	s.contrib = &cc
}

func (s *Server) contribute() *Contribute {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if s.contrib == nil {
		return nil
	}
	c := *s.contrib
	return &c
}

// serveContribute answers the page's question "may this tab join, and as
// what?". Without `[web] contribute = true` the answer is 204 No Content:
// the page shows no control and gets no token. (Not 404: every observer's
// page asks, and a browser logs each 4xx as a console error.)
func (s *Server) serveContribute(w http.ResponseWriter, r *http.Request) {
	c := s.contribute()
	if c == nil {
		w.Header().Set("X-Narrowband-Contribute", "off: the run's owner can enable it with [web] contribute = true")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	c.Signal = signalFor(c.Signal, r)
	if c.Stage >= 0 {
		c.StageTokensPerSecond = s.stageRate(c.Stage, c.TokensPerStep)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(c)
}

// stageRate is tokens per busy second of stage in the latest step.
func (s *Server) stageRate(stage, tokens int) float64 {
	s.mu.Lock()
	last := s.recent.appendTo(nil)
	s.mu.Unlock()
	if len(last) == 0 {
		return 0
	}
	var rec struct {
		Stages []struct {
			Stage int     `json:"stage"`
			Busy  float64 `json:"busy_seconds"`
		} `json:"stages"`
	}
	if json.Unmarshal(last[len(last)-1], &rec) != nil {
		return 0
	}
	for _, st := range rec.Stages {
		if st.Stage == stage && st.Busy > 0 {
			return float64(tokens) / st.Busy
		}
	}
	return 0
}

// contentPolicy is the page's content security policy. A page that may
// contribute also runs WebAssembly in a worker and opens a websocket to
// the run's signaling server, which listens on another port.
func (s *Server) contentPolicy(r *http.Request) string {
	base := "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	c := s.contribute()
	if c == nil {
		return base
	}
	connect := "'self'"
	if u, err := url.Parse(signalFor(c.Signal, r)); err == nil && (u.Scheme == "ws" || u.Scheme == "wss") && u.Host != "" {
		connect += " " + u.Scheme + "://" + u.Host
	}
	return base + "; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src " + connect
}

// signalFor is the signaling URL as a visitor reaches it: a server bound
// to all interfaces (signal_addr = "0.0.0.0:…" without public_ip) has no
// address a tab could dial, but the visitor reached this page at some
// name of this machine, and the signaling port is on the same machine.
func signalFor(signal string, r *http.Request) string {
	u, err := url.Parse(signal)
	if err != nil {
		return signal
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsUnspecified() {
		return signal
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	if host == "" {
		return signal
	}
	u.Host = net.JoinHostPort(host, u.Port())
	return u.String()
}

// wasmFiles serves the tab's peer (narrowband.wasm and the Go runtime's
// wasm_exec.js) from dir when set (tests build it into a folder of their
// own), else from the files embedded at build time (`make wasm`). The wasm
// file is ~10 MB and compresses to about a quarter, so it is gzipped once,
// on first request, and served so to every browser that accepts it.
type wasmFiles struct {
	fsys fs.FS
	mu   sync.Mutex
	gz   map[string][]byte
}

func newWasmFiles(dir string, embedded fs.FS) *wasmFiles {
	w := &wasmFiles{fsys: embedded, gz: map[string][]byte{}}
	if dir != "" {
		w.fsys = os.DirFS(dir)
	}
	return w
}

func (f *wasmFiles) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/static/wasm/")
	if !fs.ValidPath(name) || strings.Contains(name, "/") {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(f.fsys, name)
	if err != nil {
		http.Error(w, "the tab's peer is not built into this binary: run `make wasm`, then build again", http.StatusNotFound)
		return
	}
	ct := "text/javascript; charset=utf-8"
	if strings.HasSuffix(name, ".wasm") {
		ct = "application/wasm" // what WebAssembly.instantiateStreaming requires
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Vary", "Accept-Encoding")
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		if z := f.gzipped(name, b); z != nil {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Length", strconv.Itoa(len(z)))
			_, _ = w.Write(z)
			return
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

func (f *wasmFiles) gzipped(name string, b []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if z, ok := f.gz[name]; ok {
		return z
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(b); err != nil || zw.Close() != nil {
		return nil
	}
	f.gz[name] = buf.Bytes()
	return f.gz[name]
}
