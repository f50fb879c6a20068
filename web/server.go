package web

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
)

//go:embed static
var staticFS embed.FS

// Options tunes the server's memory and fairness bounds. The zero value is
// usable: every zero field takes its default.
type Options struct {
	// MaxSteps is how many step points the history keeps before it thins
	// the older half. Default 4000: enough for a smooth curve over any run
	// length, about 0.5 MB.
	MaxSteps int
	// RecentSteps is how many full step records (with per-stage and
	// per-link stats) a new observer receives. Default 64.
	RecentSteps int
	// MaxSpans is how many recent timeline spans a new observer receives.
	// Default 4096: a few steps of a deep pipeline.
	MaxSpans int
	// MaxEvents is how many recent events are kept. Default 500.
	MaxEvents int
	// MaxObservers caps concurrent /events streams; more get 503.
	// Default 256.
	MaxObservers int
	// QueueLen is how many published frames are kept for observers to
	// catch up on. An observer that falls further behind gets a fresh
	// snapshot instead of the frames it missed. Default 4096.
	QueueLen int
	// FlushInterval is how often each observer's goroutine sends what was
	// published since its last write, in one write. Publishing itself
	// never wakes an observer, so its cost does not grow with their
	// number. Default 50ms (the page redraws at most ~8 times a second).
	FlushInterval time.Duration
	// Heartbeat is how often an idle stream gets a comment line, so proxies
	// and browsers keep it open and dead clients are found. Default 15s.
	Heartbeat time.Duration
	// WriteTimeout bounds one write to an observer; a client that takes
	// longer is disconnected. Default 30s.
	WriteTimeout time.Duration
	// Logger receives connection-level messages. Default slog.Default().
	Logger *slog.Logger
	// AllowedHosts are more names (or IPs; a port is ignored) the view
	// answers to, e.g. a reverse proxy's name or this machine's DNS name.
	// Without them it answers only to this machine's host names,
	// "localhost" and loopback IPs on a loopback connection, and the IP a
	// request came in on; any other Host gets 421 (see Handler).
	AllowedHosts []string
	// WasmDir, if set, serves /static/wasm/ (the tab's peer) from this
	// folder instead of the files embedded at build time.
	WasmDir string
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxSteps, 4000)
	def(&o.RecentSteps, 64)
	def(&o.MaxSpans, 4096)
	def(&o.MaxEvents, 500)
	def(&o.MaxObservers, 256)
	def(&o.QueueLen, 4096)
	if o.MaxSteps < 4 {
		o.MaxSteps = 4
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 50 * time.Millisecond
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// ErrClosed is returned by handlers after Close; restart the server to
// serve again.
var ErrClosed = errors.New("web: server closed")

// Server holds the state of one run and streams it to observers. Its
// methods are safe for concurrent use and never block on an observer.
type Server struct {
	opts Options

	mu        sync.Mutex
	runJSON   []byte // nil until SetRun
	peersJSON []byte
	status    string
	hist      history
	recent    ring[[]byte] // full encodings of the latest steps
	spans     ring[metrics.Span]
	events    ring[[]byte]
	swarm     swarm  // the stages' replicas and their states (swarm.go)
	swarmJSON []byte // its encoding, sent in every snapshot
	observers map[*observer]struct{}
	frames    [][]byte // ring of the last QueueLen frames, frame i at i%QueueLen
	seq       uint64   // frames published so far
	closed    bool
	done      chan struct{}
	lastStep  int

	cmu     sync.Mutex
	contrib *Contribute // nil: visitors cannot contribute
}

// New returns a server with no run yet; the page shows "waiting" until the
// runtime calls SetRun or PublishStep.
func New(opts Options) *Server {
	opts = opts.withDefaults()
	sw := newSwarm()
	return &Server{
		opts:      opts,
		peersJSON: []byte("[]"),
		swarm:     sw,
		swarmJSON: appendSwarm(nil, &sw),
		hist:      history{max: opts.MaxSteps},
		recent:    newRing[[]byte](opts.RecentSteps),
		spans:     newRing[metrics.Span](opts.MaxSpans),
		events:    newRing[[]byte](opts.MaxEvents),
		observers: make(map[*observer]struct{}),
		frames:    make([][]byte, opts.QueueLen),
		done:      make(chan struct{}),
	}
}

// Close ends every open stream, so an http.Server's Shutdown does not wait
// on them. Later Publish calls still update the state but nobody is
// streamed to.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	return nil
}

// Handler serves the page at /, its assets under /static/, the live stream
// at /events and a JSON snapshot at /api/snapshot. Only GET and HEAD are
// allowed: observers can watch, not steer. A request whose Host is not a
// name of this server (Options.AllowedHosts) gets 421 Misdirected Request,
// so a web page elsewhere cannot read the run by rebinding its domain to
// this machine's address.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		// The embed directive guarantees the directory exists.
		panic(fmt.Sprintf("web: embedded static dir missing: %v", err))
	}
	files := http.FileServerFS(sub)
	mux.Handle("GET /static/", http.StripPrefix("/static/", files))
	wsub, _ := fs.Sub(sub, "wasm")
	mux.Handle("GET /static/wasm/", newWasmFiles(s.opts.WasmDir, wsub))
	mux.HandleFunc("GET /api/contribute", s.serveContribute)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/"
		files.ServeHTTP(w, r2)
	})
	mux.HandleFunc("GET /events", s.serveEvents)
	mux.HandleFunc("GET /api/snapshot", s.serveSnapshot)
	return newHostGuard(s.opts.AllowedHosts, s.opts.Logger).wrap(secure(mux, s.contentPolicy))
}

// secure adds headers that keep the page self-contained: the content
// security policy forbids loading anything from another origin, so a page
// that works here works offline.
func secure(h http.Handler, policy func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the web view is read-only: use GET", http.StatusMethodNotAllowed)
			return
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", policy(r))
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// SetRun records the run's description and sends it to every observer.
func (s *Server) SetRun(info RunInfo) {
	p := appendRun(nil, &info)
	s.mu.Lock()
	s.runJSON = p
	s.broadcast(frame("run", p))
	s.mu.Unlock()
}

// SetPeers replaces the list of peers.
func (s *Server) SetPeers(peers []Peer) {
	p := appendPeers(nil, peers)
	s.mu.Lock()
	s.peersJSON = p
	s.broadcast(frame("peers", p))
	if s.swarm.peers(peers) {
		s.swarmChangedLocked()
	}
	s.mu.Unlock()
}

// SetStatus sets the one-line status shown under the run name, e.g.
// "waiting for a peer to join".
func (s *Server) SetStatus(status string) {
	p := appendString(nil, status)
	s.mu.Lock()
	s.status = status
	s.broadcast(frame("status", p))
	s.mu.Unlock()
}

// PublishStep records one optimizer step. r is not retained.
func (s *Server) PublishStep(r metrics.StepRecord) {
	full, split := appendStepSplit(make([]byte, 0, 200+90*len(r.Stages)+200*len(r.Links)), &r, true)
	compact := full
	if split < len(full)-1 {
		compact = append(full[:split:split], '}')
	}
	f := frame("step", full)
	s.mu.Lock()
	s.hist.add(histEntry{step: r.Step, val: r.ValLoss != nil, json: compact})
	s.recent.push(full)
	if r.Step > s.lastStep {
		s.lastStep = r.Step
	}
	s.broadcast(f)
	if s.swarm.step(&r) {
		s.swarmChangedLocked()
	}
	s.mu.Unlock()
}

// PublishSpans records timeline spans. The slice is not retained.
func (s *Server) PublishSpans(spans []metrics.Span) {
	if len(spans) == 0 {
		return
	}
	f := frame("spans", appendSpans(make([]byte, 0, 80*len(spans)), spans))
	s.mu.Lock()
	for _, sp := range spans {
		s.spans.push(sp)
	}
	s.broadcast(f)
	s.mu.Unlock()
}

// PublishEvent records a non-step event (rank change, peer failure, ...).
func (s *Server) PublishEvent(e metrics.Event) {
	if e.Type == "" {
		e.Type = "event"
	}
	p := appendEvent(nil, &e)
	s.mu.Lock()
	s.events.push(p)
	s.broadcast(frame("event", p))
	if s.swarm.event(&e) {
		s.swarmChangedLocked()
	}
	s.mu.Unlock()
}

// swarmChangedLocked re-encodes the swarm and sends it to every observer,
// after the frame that changed it. Called with s.mu held; the swarm
// changes only when replicas come, go or change state, so this is rare.
func (s *Server) swarmChangedLocked() {
	s.swarmJSON = appendSwarm(nil, &s.swarm)
	s.broadcast(frame("swarm", s.swarmJSON))
}

// broadcast appends f to the frame ring that observers read from. Called
// with s.mu held, so every observer sees frames in publish order and a
// snapshot never misses or repeats a frame.
func (s *Server) broadcast(f []byte) {
	s.frames[s.seq%uint64(len(s.frames))] = f
	s.seq++
}

// snapshotParts is the state a new observer needs, copied under the lock;
// the encoding into one payload happens outside it so publishers are not
// held up by a big history.
type snapshotParts struct {
	run, peers []byte
	swarm      []byte
	status     string
	steps      [][]byte
	recent     [][]byte
	spans      []metrics.Span
	events     [][]byte
}

// partsLocked copies the state; s.mu must be held.
func (s *Server) partsLocked() snapshotParts {
	p := snapshotParts{run: s.runJSON, peers: s.peersJSON, swarm: s.swarmJSON, status: s.status}
	p.steps = make([][]byte, len(s.hist.entries))
	for i, e := range s.hist.entries {
		p.steps[i] = e.json
	}
	p.recent = s.recent.appendTo(nil)
	p.spans = s.spans.appendTo(nil)
	p.events = s.events.appendTo(nil)
	return p
}

func (p *snapshotParts) encode() []byte {
	n := 256 + len(p.run) + len(p.peers) + len(p.swarm) + 100*len(p.spans)
	for _, b := range p.steps {
		n += len(b) + 1
	}
	for _, b := range p.recent {
		n += len(b) + 1
	}
	for _, b := range p.events {
		n += len(b) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"run":`...)
	if p.run == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, p.run...)
	}
	b = append(b, `,"peers":`...)
	b = append(b, p.peers...)
	b = append(b, `,"status":`...)
	b = appendString(b, p.status)
	if p.swarm != nil {
		b = append(b, `,"swarm":`...)
		b = append(b, p.swarm...)
	}
	list := func(name string, items [][]byte) {
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":[`...)
		for i, it := range items {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, it...)
		}
		b = append(b, ']')
	}
	list("steps", p.steps)
	list("recent", p.recent)
	list("events", p.events)
	b = append(b, `,"spans":`...)
	b = appendSpans(b, p.spans)
	return append(b, '}')
}

func (s *Server) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	p := s.partsLocked()
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(p.encode())
}

// Observers reports how many /events streams are open.
func (s *Server) Observers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.observers)
}
