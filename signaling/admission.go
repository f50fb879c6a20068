//go:build !js

package signaling

import (
	"container/list"
	"net"
	"net/http"

	"github.com/gorilla/websocket"
)

// Admission: a socket holds one of Config.MaxConns slots from the moment
// its request is admitted until it closes. Until it proves the secret it
// also counts against its address (Config.MaxUnauthPerAddr) and against
// the unauthenticated share (MaxConns − ReservedConns). Only the secret
// gets a socket out of those two counts, so somebody without it can hold
// at most MaxUnauthPerAddr sockets per address, each for at most
// AuthTimeout. When many addresses together fill the share, a newcomer
// from an address holding fewer unauthenticated sockets than the busiest
// address closes that address's oldest one (most likely one waiting out
// its deadline: a real peer answers the challenge within a round trip)
// and takes its place; a newcomer from the busiest address itself is
// refused. So a peer connecting from its own address always gets its
// chance to authenticate, and can only be pushed out again by sockets from
// addresses that hold none; starving it takes a flood from about as many
// addresses as the share has slots. ReservedConns slots can only ever be
// held by members.

// ticket is one admitted socket's claim on the counts.
type ticket struct {
	addr string
	seq  uint64 // admission order
	// elem is the ticket's place in its address's queue of
	// unauthenticated tickets (oldest first); nil after promote, release
	// or eviction.
	elem *list.Element
	// ws is set once the upgrade is done, so an eviction can close it.
	ws       *websocket.Conn
	evicted  bool
	released bool
}

// addrKey is the address a remote is counted under: its IP, or for IPv6
// its /64, since one home connection or one cloud VM gets a whole /64 and
// could otherwise open sockets from millions of addresses.
func addrKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return (&net.IPNet{IP: ip.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
}

// admitLocked claims a slot for a request from addr, or says which limit
// refuses it. If the unauthenticated share is full it evicts a socket (see
// above) and returns it: the caller closes its connection (victim.ws, read
// under the lock; nil while it is still upgrading, and then the upgrade
// path sees victim.evicted) after unlocking. s.mu held.
func (s *Server) admitLocked(addr string) (t *ticket, refused limitKind, victim *ticket) {
	q := s.unauthBy[addr]
	held := 0
	if q != nil {
		held = q.Len()
	}
	switch {
	case s.open >= s.cfg.MaxConns:
		return nil, limitConns, nil
	case held >= s.cfg.MaxUnauthPerAddr:
		return nil, limitPerAddr, nil
	}
	if s.unauthN >= s.cfg.MaxConns-s.cfg.ReservedConns {
		busiest := s.busiestLocked()
		if busiest.Len() <= held {
			return nil, limitShare, nil
		}
		victim = busiest.Front().Value.(*ticket)
		s.releaseLocked(victim)
		victim.evicted = true
	}
	if q == nil {
		q = list.New()
		s.unauthBy[addr] = q
	}
	s.seq++
	t = &ticket{addr: addr, seq: s.seq}
	t.elem = q.PushBack(t)
	s.unauthN++
	s.open++
	return t, limitUnknown, victim
}

// busiestLocked returns the queue of the address holding the most
// unauthenticated sockets, of those the one whose oldest socket is oldest.
// It scans every address, at most the share's size, and runs only while
// the share is full.
func (s *Server) busiestLocked() *list.List {
	var best *list.List
	var bestSeq uint64
	for _, q := range s.unauthBy {
		seq := q.Front().Value.(*ticket).seq
		if best == nil || q.Len() > best.Len() || q.Len() == best.Len() && seq < bestSeq {
			best, bestSeq = q, seq
		}
	}
	return best
}

// leaveUnauthLocked takes t out of the unauthenticated counts.
func (s *Server) leaveUnauthLocked(t *ticket) {
	if t.elem == nil {
		return
	}
	q := s.unauthBy[t.addr]
	q.Remove(t.elem)
	t.elem = nil
	s.unauthN--
	if q.Len() == 0 {
		delete(s.unauthBy, t.addr)
	}
}

func (s *Server) releaseLocked(t *ticket) {
	if t.released {
		return
	}
	t.released = true
	s.leaveUnauthLocked(t)
	s.open--
}

// release gives back t's slot when its socket ends.
func (s *Server) release(t *ticket) {
	s.mu.Lock()
	s.releaseLocked(t)
	s.mu.Unlock()
}

// promote moves t from the unauthenticated counts to the members' share
// after a valid proof. False means t was evicted meanwhile.
func (s *Server) promote(t *ticket) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.evicted {
		return false
	}
	s.leaveUnauthLocked(t)
	return true
}

// connState bounds, per address, the TCP connections a Serve-d server
// holds before they ask for a websocket: without it a client that opens
// connections and sends nothing holds a file descriptor and a goroutine
// each until ReadHeaderTimeout, unlimited by any count above.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		addr := addrKey(c.RemoteAddr().String())
		s.mu.Lock()
		if s.preBy[addr] >= s.cfg.MaxUnauthPerAddr {
			s.mu.Unlock()
			s.limits.note(limitPreUpgrade, addr, s.cfg.MaxUnauthPerAddr, "")
			_ = c.Close()
			return
		}
		s.preBy[addr]++
		s.pre[c] = addr
		s.mu.Unlock()
	case http.StateHijacked, http.StateClosed:
		s.mu.Lock()
		if addr, ok := s.pre[c]; ok {
			delete(s.pre, c)
			if s.preBy[addr]--; s.preBy[addr] <= 0 {
				delete(s.preBy, addr)
			}
		}
		s.mu.Unlock()
	}
}
