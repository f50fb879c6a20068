//go:build !js

package signaling

import (
	"log/slog"
	"sync"
	"time"
)

// limitKind names a limit that refused or closed a socket.
type limitKind int

const (
	limitUnknown limitKind = iota
	// limitConns: Config.MaxConns sockets are open; refused with 503.
	limitConns
	// limitPerAddr: the address already holds Config.MaxUnauthPerAddr
	// sockets that have not authenticated; refused with 429.
	limitPerAddr
	// limitEvict: unauthenticated sockets fill their share of MaxConns;
	// the busiest address's oldest one is closed to admit the newcomer.
	limitEvict
	// limitShare: the share is full and the newcomer's address is the
	// busiest; refused with 503.
	limitShare
	// limitPreUpgrade: the address holds MaxUnauthPerAddr TCP connections
	// that have not yet asked for a websocket (Serve only); closed at once.
	limitPreUpgrade
	// limitAuthTimeout: a socket did not authenticate within
	// Config.AuthTimeout and was closed.
	limitAuthTimeout
	// limitAuthFailed: a socket sent a proof made with another secret.
	limitAuthFailed
	numLimitKinds
)

func (k limitKind) String() string {
	switch k {
	case limitConns:
		return "max-conns"
	case limitPerAddr:
		return "max-unauth-per-addr"
	case limitEvict:
		return "unauth-share-evict"
	case limitShare:
		return "unauth-share-full"
	case limitPreUpgrade:
		return "max-unauth-per-addr-before-upgrade"
	case limitAuthTimeout:
		return "auth-timeout"
	case limitAuthFailed:
		return "auth-failed"
	}
	return "unknown"
}

// field is the Config field an operator would change.
func (k limitKind) field() string {
	switch k {
	case limitConns:
		return "Config.MaxConns"
	case limitPerAddr, limitPreUpgrade:
		return "Config.MaxUnauthPerAddr"
	case limitEvict, limitShare:
		return "Config.ReservedConns"
	case limitAuthTimeout:
		return "Config.AuthTimeout"
	case limitAuthFailed:
		return "Config.Key"
	}
	return ""
}

// message says what happened and what the operator can do about it.
func (k limitKind) message() string {
	switch k {
	case limitConns:
		return "signaling: server full, refusing connections (HTTP 503); raise Config.MaxConns if these are real peers"
	case limitPerAddr:
		return "signaling: refusing connections from an address that holds too many unauthenticated sockets (HTTP 429): a flood, or many peers behind one NAT (then raise Config.MaxUnauthPerAddr)"
	case limitEvict:
		return "signaling: unauthenticated sockets fill their share of Config.MaxConns; closing the oldest of the busiest address to admit newcomers from others (a flood from many addresses?)"
	case limitShare:
		return "signaling: unauthenticated sockets fill their share of Config.MaxConns; refusing newcomers from the busiest address (HTTP 503)"
	case limitPreUpgrade:
		return "signaling: closing TCP connections from an address that holds too many that have not asked for a websocket yet"
	case limitAuthTimeout:
		return "signaling: closed sockets that did not authenticate within Config.AuthTimeout"
	case limitAuthFailed:
		return "signaling: authentication failed: proof made with another secret (is the peer started with this run's secret?)"
	}
	return "signaling: limit reached"
}

// maxTallyAddrs bounds the addresses remembered per log interval, so a
// flood from many addresses cannot grow the tally.
const maxTallyAddrs = 256

// tally is what one limit did since its last log line.
type tally struct {
	last   time.Time // when the last line was written
	first  time.Time // first event not yet logged
	count  int
	addrs  map[string]int
	max    int
	detail string
	timer  *time.Timer
}

// limitLog writes at most one line per limit kind per interval: the first
// event of a quiet period at once, the rest summed (how many, from how many
// addresses, the busiest one) when the interval is over. A flood therefore
// costs a few log lines, not one per socket, and nothing goes unreported.
type limitLog struct {
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	tallies [numLimitKinds]tally
	stopped bool
}

func newLimitLog(log *slog.Logger, every time.Duration) *limitLog {
	return &limitLog{log: log, every: every}
}

// note records one event of kind k from addr; max is the limit's value and
// detail an optional peer ID.
func (l *limitLog) note(k limitKind, addr string, max int, detail string) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	t := &l.tallies[k]
	if t.count == 0 {
		t.first = now
	}
	t.count++
	if t.addrs == nil {
		t.addrs = map[string]int{}
	}
	if _, ok := t.addrs[addr]; ok || len(t.addrs) < maxTallyAddrs {
		t.addrs[addr]++
	}
	t.max, t.detail = max, detail
	if t.timer != nil {
		return // a summary is already due
	}
	if wait := t.last.Add(l.every).Sub(now); wait > 0 {
		t.timer = time.AfterFunc(wait, func() { l.flush(k) })
		return
	}
	l.writeLocked(k, now)
}

func (l *limitLog) flush(k limitKind) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tallies[k].timer = nil
	if !l.stopped && l.tallies[k].count > 0 {
		l.writeLocked(k, time.Now())
	}
}

// stop writes what is still pending and ignores later events.
func (l *limitLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.stopped = true
	now := time.Now()
	for k := range l.tallies {
		t := &l.tallies[k]
		if t.timer != nil {
			t.timer.Stop()
			t.timer = nil
		}
		if t.count > 0 {
			l.writeLocked(limitKind(k), now)
		}
	}
}

func (l *limitLog) writeLocked(k limitKind, now time.Time) {
	t := &l.tallies[k]
	top, topN := "", 0
	for a, n := range t.addrs {
		if n > topN || n == topN && a < top {
			top, topN = a, n
		}
	}
	attrs := []any{
		"limit", k.String(),
		"field", k.field(),
		"addr", top,
		"addr_count", topN,
		"count", t.count,
		"addrs", len(t.addrs),
		"window", now.Sub(t.first).Round(time.Millisecond),
	}
	if t.max > 0 {
		attrs = append(attrs, "max", t.max)
	}
	if t.detail != "" {
		attrs = append(attrs, "peer", t.detail)
	}
	l.log.Warn(k.message(), attrs...)
	t.last = now
	t.count = 0
	clear(t.addrs)
}
