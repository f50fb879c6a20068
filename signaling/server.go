//go:build !js

package signaling

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Config configures a Server. Zero fields take the defaults noted.
type Config struct {
	// Key is DeriveKey(secret) for the run; required. Every room on this
	// server uses it (a room is one run; run one server per secret).
	Key []byte
	// MaxMessageBytes bounds one incoming message (default 64 KiB).
	MaxMessageBytes int
	// MaxConns bounds open websockets, authenticated or not, so a flood of
	// connections cannot exhaust the process (default 1024).
	MaxConns int
	// ReservedConns of the MaxConns slots can only be held by members that
	// proved the secret: sockets that have not authenticated yet share the
	// other MaxConns − ReservedConns, and when they fill it a newcomer from
	// a less busy address closes the oldest socket of the busiest one, so
	// sockets opened without the secret can neither take the members'
	// slots nor keep a peer from trying. Members beyond the reserve compete
	// with unauthenticated sockets for the remaining slots (default
	// MaxConns/4: 256 of the default 1024).
	ReservedConns int
	// MaxUnauthPerAddr bounds the sockets one remote address (an IPv4
	// address, or an IPv6 /64) may hold before they authenticate; more get
	// HTTP 429. Serve also applies it to TCP connections that have not
	// asked for a websocket yet. A real peer holds one such socket for a
	// round trip, so this only bites on floods — or on many peers behind
	// one NAT, or a reverse proxy in front of the server, where every peer
	// has the proxy's address: raise it there (default 16).
	MaxUnauthPerAddr int
	// MaxRooms bounds concurrent rooms (default 64).
	MaxRooms int
	// MaxPeersPerRoom bounds members of one room (default 64).
	MaxPeersPerRoom int
	// RatePerSecond and RateBurst bound messages a connection may send: a
	// token bucket (defaults 200/s, burst 400 — a WebRTC set-up needs a
	// handful of messages, so this only stops floods).
	RatePerSecond float64
	RateBurst     int
	// AuthTimeout bounds the time from the upgrade to a valid auth message;
	// Serve also uses it to bound reading the HTTP request. A peer needs one
	// round trip, so a socket still silent after it is not a peer
	// (default 3 s).
	AuthTimeout time.Duration
	// LimitLogInterval is how often at most each limit above logs that it
	// refused or closed sockets: the first time at once, then one summary
	// per interval with how many, from how many addresses and the busiest
	// one, so a flood does not flood the log (default 10 s).
	LimitLogInterval time.Duration
	// SendQueue bounds messages queued to one member; a member that does not
	// read them is dropped rather than slowing the room (default 1024).
	SendQueue int
	// PingInterval is how often the server pings each peer; a peer that
	// answers nothing (neither pong nor message) for three intervals is
	// dropped and its leave announced, so a vanished machine does not stay
	// a member until TCP gives up (default 10 s).
	PingInterval time.Duration
	// JoinTokens lets members authenticate with a room's join token
	// (JoinToken) instead of the secret: a guest, such as a browser tab
	// that contributes a stage, which may only join the room the token
	// names, under a name not in ReservedIDs. Off, a join token is refused
	// like a wrong secret.
	JoinTokens bool
	// ReservedIDs are names a guest may not take (e.g. the coordinator's),
	// so a token cannot be used to impersonate a member that holds the
	// secret.
	ReservedIDs []string
	// OnMembership, if set, is called for every join and leave. It runs on
	// the joining or leaving connection's goroutine: do not block in it.
	OnMembership func(Event)
	// Logger receives connection-level events (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.MaxMessageBytes == 0 {
		d.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if d.MaxConns == 0 {
		d.MaxConns = 1024
	}
	if d.ReservedConns == 0 {
		d.ReservedConns = d.MaxConns / 4
	}
	if d.MaxUnauthPerAddr == 0 {
		d.MaxUnauthPerAddr = 16
	}
	if d.LimitLogInterval == 0 {
		d.LimitLogInterval = 10 * time.Second
	}
	if d.MaxRooms == 0 {
		d.MaxRooms = 64
	}
	if d.MaxPeersPerRoom == 0 {
		d.MaxPeersPerRoom = 64
	}
	if d.RatePerSecond == 0 {
		d.RatePerSecond = 200
	}
	if d.RateBurst == 0 {
		d.RateBurst = 400
	}
	if d.AuthTimeout == 0 {
		d.AuthTimeout = 3 * time.Second
	}
	if d.SendQueue == 0 {
		d.SendQueue = 1024
	}
	if d.PingInterval == 0 {
		d.PingInterval = 10 * time.Second
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return d
}

// Validate reports the first bad field, naming it and its value.
func (c *Config) Validate() error {
	if len(c.Key) != KeySize {
		return fmt.Errorf("signaling: Config.Key has %d bytes, want %d: set it to DeriveKey(secret)", len(c.Key), KeySize)
	}
	d := c.withDefaults()
	switch {
	case d.MaxMessageBytes < 1024:
		return fmt.Errorf("signaling: Config.MaxMessageBytes = %d, want ≥ 1024 (an SDP offer needs a few KiB)", d.MaxMessageBytes)
	case d.MaxConns < 0:
		return fmt.Errorf("signaling: Config.MaxConns = %d, want > 0", d.MaxConns)
	case d.ReservedConns < 0 || d.ReservedConns >= d.MaxConns:
		return fmt.Errorf("signaling: Config.ReservedConns = %d with MaxConns = %d, want 0 ≤ ReservedConns < MaxConns (unauthenticated sockets get the other MaxConns − ReservedConns; none would leave no way in)", d.ReservedConns, d.MaxConns)
	case d.MaxUnauthPerAddr < 0:
		return fmt.Errorf("signaling: Config.MaxUnauthPerAddr = %d, want > 0", d.MaxUnauthPerAddr)
	case d.LimitLogInterval < 0:
		return fmt.Errorf("signaling: Config.LimitLogInterval = %v, want > 0", d.LimitLogInterval)
	case d.MaxRooms < 0:
		return fmt.Errorf("signaling: Config.MaxRooms = %d, want > 0", d.MaxRooms)
	case d.MaxPeersPerRoom < 0:
		return fmt.Errorf("signaling: Config.MaxPeersPerRoom = %d, want > 0", d.MaxPeersPerRoom)
	case d.RatePerSecond < 0 || d.RateBurst < 0:
		return fmt.Errorf("signaling: Config.RatePerSecond = %g, RateBurst = %d, want > 0", d.RatePerSecond, d.RateBurst)
	case d.AuthTimeout < 0:
		return fmt.Errorf("signaling: Config.AuthTimeout = %v, want > 0", d.AuthTimeout)
	case d.SendQueue < 0:
		return fmt.Errorf("signaling: Config.SendQueue = %d, want > 0", d.SendQueue)
	case d.PingInterval < 0:
		return fmt.Errorf("signaling: Config.PingInterval = %v, want > 0", d.PingInterval)
	}
	return nil
}

// EventKind says what happened to a room's membership.
type EventKind int

const (
	EventUnknown EventKind = iota
	EventJoin
	EventLeave
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	}
	return "unknown"
}

// Event is a membership change seen by Config.OnMembership.
type Event struct {
	Kind EventKind
	Room string
	Peer string
}

// member is one participant of a room: a websocket connection or a Local.
type member struct {
	id   string
	room string
	// deliver queues m without blocking; false means the member cannot keep
	// up and has been dropped.
	deliver func(m Message) bool
}

type room struct {
	members map[string]*member
}

// Server is the signaling server: an http.Handler that serves one room per
// URL path (/ROOM).
type Server struct {
	cfg      Config
	upgrader websocket.Upgrader

	limits *limitLog

	mu     sync.Mutex
	rooms  map[string]*room
	conns  map[*websocket.Conn]struct{}
	locals map[*Local]struct{}
	// Admission counts (admission.go): open slots, unauthenticated
	// tickets oldest first and per address, and Serve's connections that
	// have not asked for a websocket yet.
	open     int
	unauthN  int
	unauthBy map[string]*list.List // oldest first
	seq      uint64
	pre      map[net.Conn]string
	preBy    map[string]int
	closed   bool
	wg       sync.WaitGroup
}

// NewServer checks cfg and returns a server ready to be mounted.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	c.Key = append([]byte(nil), cfg.Key...)
	return &Server{
		cfg: c,
		upgrader: websocket.Upgrader{
			HandshakeTimeout: 10 * time.Second,
			// Any origin may connect (a browser peer may be served from the
			// web view on another port); the secret proof is the access check.
			CheckOrigin: func(*http.Request) bool { return true },
		},
		limits:   newLimitLog(c.Logger, c.LimitLogInterval),
		rooms:    map[string]*room{},
		conns:    map[*websocket.Conn]struct{}{},
		locals:   map[*Local]struct{}{},
		unauthBy: map[string]*list.List{},
		pre:      map[net.Conn]string{},
		preBy:    map[string]int{},
	}, nil
}

// Serve runs the server on ln until ctx is done, then shuts it down. It
// returns nil after a shutdown caused by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler: s,
		// A peer sends its request at once; a socket that does not is
		// holding a slot, not connecting.
		ReadHeaderTimeout: s.cfg.AuthTimeout,
		IdleTimeout:       s.cfg.AuthTimeout,
		ConnState:         s.connState,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("signaling: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx) // hijacked websockets are closed by s.Close below
	s.Close()
	<-errc
	return nil
}

// ListenAndServe listens on addr (HOST:PORT) and serves until ctx is done.
func ListenAndServe(ctx context.Context, addr string, cfg Config) error {
	s, err := NewServer(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("signaling: listen on %s: %w (is the port in use?)", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Close disconnects every peer and in-process member and waits for the
// connection goroutines to end. The server refuses connections afterwards.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*websocket.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	locals := make([]*Local, 0, len(s.locals))
	for l := range s.locals {
		locals = append(locals, l)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	for _, l := range locals {
		l.Close()
	}
	s.wg.Wait()
	s.limits.stop()
}

// Rooms returns the names of rooms with at least one member.
func (s *Server) Rooms() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.rooms))
	for name := range s.rooms {
		out = append(out, name)
	}
	return out
}

// Members returns the peer IDs in room.
func (s *Server) Members(roomName string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[roomName]
	if r == nil {
		return nil
	}
	out := make([]string, 0, len(r.members))
	for id := range r.members {
		out = append(out, id)
	}
	return out
}

// joinError is a refusal with the code to send.
type joinError struct{ code, msg string }

func (e *joinError) Error() string { return e.msg }

// join adds m to its room and tells everyone. It returns the other members.
func (s *Server) join(m *member) ([]string, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, &joinError{CodeFull, "server is shutting down"}
	}
	r := s.rooms[m.room]
	if r == nil {
		if len(s.rooms) >= s.cfg.MaxRooms {
			s.mu.Unlock()
			return nil, &joinError{CodeFull, fmt.Sprintf("server full: %d rooms in use (Config.MaxRooms)", s.cfg.MaxRooms)}
		}
		r = &room{members: map[string]*member{}}
		s.rooms[m.room] = r
	}
	if _, dup := r.members[m.id]; dup {
		s.mu.Unlock()
		return nil, &joinError{CodeDuplicate, fmt.Sprintf("peer ID %q is already in room %q; pick a unique ID per peer", m.id, m.room)}
	}
	if len(r.members) >= s.cfg.MaxPeersPerRoom {
		s.mu.Unlock()
		return nil, &joinError{CodeFull, fmt.Sprintf("room %q full: %d peers (Config.MaxPeersPerRoom)", m.room, s.cfg.MaxPeersPerRoom)}
	}
	others := make([]string, 0, len(r.members))
	for id, o := range r.members {
		others = append(others, id)
		o.deliver(Message{Type: TypeJoin, From: m.id})
	}
	r.members[m.id] = m
	s.mu.Unlock()
	s.cfg.Logger.Info("signaling: peer joined", "room", m.room, "peer", m.id)
	if s.cfg.OnMembership != nil {
		s.cfg.OnMembership(Event{Kind: EventJoin, Room: m.room, Peer: m.id})
	}
	return others, nil
}

// leave removes m (if it is still the member under its ID) and tells the rest.
func (s *Server) leave(m *member) {
	s.mu.Lock()
	r := s.rooms[m.room]
	if r == nil || r.members[m.id] != m {
		s.mu.Unlock()
		return
	}
	delete(r.members, m.id)
	for _, o := range r.members {
		o.deliver(Message{Type: TypeLeave, From: m.id})
	}
	if len(r.members) == 0 {
		delete(s.rooms, m.room)
	}
	s.mu.Unlock()
	s.cfg.Logger.Info("signaling: peer left", "room", m.room, "peer", m.id)
	if s.cfg.OnMembership != nil {
		s.cfg.OnMembership(Event{Kind: EventLeave, Room: m.room, Peer: m.id})
	}
}

// relay forwards msg from m to msg.To in the same room, stamping From.
func (s *Server) relay(from *member, msg Message) error {
	msg.From = from.id
	s.mu.Lock()
	var to *member
	if r := s.rooms[from.room]; r != nil {
		to = r.members[msg.To]
	}
	s.mu.Unlock()
	if to == nil {
		return fmt.Errorf("peer %q is not in room %q (it left or has not joined yet)", msg.To, from.room)
	}
	to.deliver(msg)
	return nil
}

// ServeHTTP upgrades a request for /ROOM to a websocket and runs the peer.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	roomName := strings.TrimPrefix(r.URL.Path, "/")
	if err := ValidID(roomName); err != nil {
		http.Error(w, fmt.Sprintf("signaling: bad room in URL path %q: %v", r.URL.Path, err), http.StatusBadRequest)
		return
	}
	addr := addrKey(r.RemoteAddr)
	s.mu.Lock()
	closed := s.closed
	var t, victim *ticket
	var refused limitKind
	var victimWS *websocket.Conn
	if !closed {
		t, refused, victim = s.admitLocked(addr)
		if t != nil {
			s.wg.Add(1)
		}
		if victim != nil {
			victimWS = victim.ws
		}
	}
	s.mu.Unlock()
	if victim != nil {
		s.limits.note(limitEvict, victim.addr, s.cfg.MaxConns-s.cfg.ReservedConns, "")
		if victimWS != nil {
			_ = victimWS.Close()
		}
	}
	if t == nil {
		// A refused client should go away, not keep its connection idle.
		w.Header().Set("Connection", "close")
		switch {
		case closed:
			http.Error(w, "signaling: server is shutting down", http.StatusServiceUnavailable)
		case refused == limitConns:
			s.limits.note(refused, addr, s.cfg.MaxConns, "")
			w.Header().Set("Retry-After", "1")
			http.Error(w, fmt.Sprintf("signaling: server full: %d connections (Config.MaxConns); try again later", s.cfg.MaxConns), http.StatusServiceUnavailable)
		case refused == limitShare:
			s.limits.note(refused, addr, s.cfg.MaxConns-s.cfg.ReservedConns, "")
			w.Header().Set("Retry-After", "1")
			http.Error(w, fmt.Sprintf("signaling: %d sockets wait to authenticate (Config.MaxConns − Config.ReservedConns) and %s holds as many of them as any address; try again shortly", s.cfg.MaxConns-s.cfg.ReservedConns, addr), http.StatusServiceUnavailable)
		case refused == limitPerAddr:
			s.limits.note(refused, addr, s.cfg.MaxUnauthPerAddr, "")
			w.Header().Set("Retry-After", "1")
			http.Error(w, fmt.Sprintf("signaling: %s already holds %d sockets that have not authenticated (Config.MaxUnauthPerAddr); authenticate or close them, then try again", addr, s.cfg.MaxUnauthPerAddr), http.StatusTooManyRequests)
		}
		return
	}
	defer s.wg.Done()
	defer s.release(t)
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader already answered with an HTTP error
	}
	s.mu.Lock()
	if s.closed || t.evicted {
		s.mu.Unlock()
		_ = ws.Close()
		return
	}
	t.ws = ws
	s.conns[ws] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, ws)
		s.mu.Unlock()
		_ = ws.Close()
	}()
	s.runPeer(ws, roomName, t)
}

// refuse writes an error message and a close frame directly (before the
// writer goroutine exists).
func refuse(ws *websocket.Conn, code, text string) {
	_ = ws.SetWriteDeadline(time.Now().Add(time.Second))
	_ = ws.WriteJSON(Message{Type: TypeError, Code: code, Error: text})
	_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, truncate(text, 120)))
	_ = ws.SetReadDeadline(time.Now().Add(time.Second))
	drain(ws)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// wsPeer is the queue between the room and one websocket's writer.
type wsPeer struct {
	mu     sync.Mutex
	out    chan Message
	closed bool
}

func (p *wsPeer) deliver(m Message) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	select {
	case p.out <- m:
		return true
	default:
		// The peer does not read: drop it rather than stall the room.
		p.closed = true
		close(p.out)
		return false
	}
}

func (p *wsPeer) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// finish queues a last message (if any) and ends the writer after it.
func (p *wsPeer) finish(last *Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if last != nil {
		select {
		case p.out <- *last:
		default:
		}
	}
	p.closed = true
	close(p.out)
}

func (s *Server) runPeer(ws *websocket.Conn, roomName string, t *ticket) {
	log := s.cfg.Logger.With("room", roomName, "remote", ws.RemoteAddr().String())
	ws.SetReadLimit(int64(s.cfg.MaxMessageBytes))
	nonce, nonce64 := newNonce()
	// One deadline for the whole handshake: a socket that reads the
	// challenge slowly gets no more time to answer it.
	deadline := time.Now().Add(s.cfg.AuthTimeout)
	_ = ws.SetWriteDeadline(deadline)
	if err := ws.WriteJSON(Message{Type: TypeChallenge, Nonce: nonce64}); err != nil {
		return
	}
	_ = ws.SetReadDeadline(deadline)
	auth, code, err := s.readMessage(ws)
	if err != nil {
		if code == "" { // connection error: nobody to tell
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				s.limits.note(limitAuthTimeout, t.addr, 0, "")
			}
			return
		}
		refuse(ws, code, fmt.Sprintf("authentication failed: %v", err))
		return
	}
	if auth.Type != TypeAuth || auth.From == "" {
		refuse(ws, CodeAuth, fmt.Sprintf("authentication failed: expected {\"type\":\"auth\",\"from\":ID,\"proof\":HEX} for room %s, got type %q", roomName, auth.Type))
		return
	}
	if auth.Proof == "" {
		refuse(ws, CodeAuth, fmt.Sprintf("authentication failed: no proof of the secret for room %s; the peer must be started with the run secret", roomName))
		return
	}
	if auth.Scope != "" {
		if err := s.checkGuest(nonce, roomName, auth); err != nil {
			s.limits.note(limitAuthFailed, t.addr, 0, auth.From)
			refuse(ws, CodeAuth, fmt.Sprintf("authentication failed: %v", err))
			return
		}
	} else if !checkProof(s.cfg.Key, nonce, roomName, auth.From, auth.Proof) {
		// Rate-limited: guessing secrets must not also flood the log.
		s.limits.note(limitAuthFailed, t.addr, 0, auth.From)
		refuse(ws, CodeAuth, fmt.Sprintf("authentication failed: wrong secret for room %s", roomName))
		return
	}
	if !s.promote(t) {
		return // evicted just now; its socket is closed
	}
	_ = ws.SetReadDeadline(time.Time{})

	p := &wsPeer{out: make(chan Message, s.cfg.SendQueue)}
	m := &member{id: auth.From, room: roomName, deliver: p.deliver}
	// Queue the welcome before joining so it precedes any relayed message.
	others, err := s.join(m)
	if err != nil {
		var je *joinError
		if errors.As(err, &je) {
			refuse(ws, je.code, je.msg)
		}
		return
	}
	defer s.leave(m)
	// The welcome must be the first thing the peer reads; join may already
	// have let others send to it, so write it directly before the writer runs.
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteJSON(Message{Type: TypeWelcome, From: auth.From, Peers: others}); err != nil {
		return
	}

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writeLoop(ws, p)
	}()
	s.readLoop(ws, m, p, log)
	<-writerDone
}

// writeLoop sends queued messages until the queue is closed, then says goodbye.
func (s *Server) writeLoop(ws *websocket.Conn, p *wsPeer) {
	var last Message
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ping.C:
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
				_ = ws.Close()
				for range p.out {
				}
				return
			}
			continue
		case m, ok := <-p.out:
			if !ok {
				s.sayGoodbye(ws, last)
				return
			}
			_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := ws.WriteJSON(m); err != nil {
				_ = ws.Close() // unblocks the reader
				for range p.out {
				}
				return
			}
			last = m
		}
	}
}

func (s *Server) sayGoodbye(ws *websocket.Conn, last Message) {
	reason := ""
	if last.Type == TypeError {
		reason = truncate(last.Error, 120)
	}
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, reason), time.Now().Add(time.Second))
	// Let the peer read the error and answer the close before the socket
	// goes: closing with unread input would reset the TCP connection and
	// lose the error message. The reader drains until this deadline.
	_ = ws.SetReadDeadline(time.Now().Add(time.Second))
}

// readLoop handles a member's messages until its socket ends or it misbehaves.
func (s *Server) readLoop(ws *websocket.Conn, m *member, p *wsPeer, log *slog.Logger) {
	bucket := newTokenBucket(s.cfg.RatePerSecond, s.cfg.RateBurst)
	alive := func() {
		// Once the writer has said goodbye its short drain deadline stands.
		if !p.isClosed() {
			_ = ws.SetReadDeadline(time.Now().Add(3 * s.cfg.PingInterval))
		}
	}
	ws.SetPongHandler(func(string) error { alive(); return nil })
	for {
		alive()
		msg, code, err := s.readMessage(ws)
		if err != nil {
			if code != "" {
				log.Warn("signaling: dropping peer", "peer", m.id, "err", err)
				p.finish(&Message{Type: TypeError, Code: code, Error: err.Error()})
				drain(ws)
			} else {
				p.finish(nil)
			}
			return
		}
		if !bucket.take(time.Now()) {
			log.Warn("signaling: dropping peer for flooding", "peer", m.id)
			p.finish(&Message{Type: TypeError, Code: CodeRate, Error: fmt.Sprintf("rate limit exceeded: more than %g messages/s (burst %d); slow down", s.cfg.RatePerSecond, s.cfg.RateBurst)})
			drain(ws)
			return
		}
		if !relayed(msg.Type) || msg.To == "" {
			p.finish(&Message{Type: TypeError, Code: CodeBadMessage, Error: fmt.Sprintf("after joining a peer may send only offer, answer, candidate or message with \"to\"; got %q", msg.Type)})
			drain(ws)
			return
		}
		if msg.From != "" && msg.From != m.id {
			p.finish(&Message{Type: TypeError, Code: CodeBadMessage, Error: fmt.Sprintf("\"from\" is %q but you joined as %q", msg.From, m.id)})
			drain(ws)
			return
		}
		if err := s.relay(m, msg); err != nil {
			if !p.deliver(Message{Type: TypeError, Code: CodeNoPeer, To: msg.To, Error: err.Error()}) {
				return
			}
		}
	}
}

// drain discards input until the socket ends (the writer sets a deadline
// once its close frame is out), so the peer sees the error, not a reset.
func drain(ws *websocket.Conn) {
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}

// readMessage reads and decodes one message. A non-empty code means the
// peer sent something bad (and should be told); an empty code with an error
// means the connection itself failed.
func (s *Server) readMessage(ws *websocket.Conn) (Message, string, error) {
	kind, b, err := ws.ReadMessage()
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			return Message{}, CodeTooLarge, fmt.Errorf("message over %d bytes (Config.MaxMessageBytes)", s.cfg.MaxMessageBytes)
		}
		return Message{}, "", err
	}
	if kind != websocket.TextMessage {
		return Message{}, CodeBadMessage, fmt.Errorf("binary websocket frame; send one JSON object per text frame")
	}
	m, err := DecodeMessage(b, s.cfg.MaxMessageBytes)
	if err != nil {
		return Message{}, CodeBadMessage, err
	}
	return m, "", nil
}

// tokenBucket is a plain rate limiter; one per connection, one goroutine.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newTokenBucket(rate float64, burst int) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens += now.Sub(b.last).Seconds() * b.rate
		if b.tokens > b.burst {
			b.tokens = b.burst
		}
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
