package web

import (
	"net/http"
	"sync"
	"time"
)

// observer is one open /events stream. Publishers append frames to pending
// (under mu, never blocking); the stream's own goroutine swaps pending out
// and writes it. When pending would grow past its bound the observer is too
// slow: its frames are dropped and it is marked for a resync, which sends a
// fresh snapshot that contains everything it missed.
type observer struct {
	mu      sync.Mutex
	pending [][]byte
	resync  bool
	dropped int // frames dropped because of overflow, for the log
	wake    chan struct{}
}

func newObserver() *observer { return &observer{wake: make(chan struct{}, 1)} }

func (o *observer) push(f []byte, max int) {
	o.mu.Lock()
	switch {
	case o.resync:
		// The coming snapshot will hold this frame's data.
		o.dropped++
	case len(o.pending) >= max:
		o.dropped += len(o.pending) + 1
		clear(o.pending)
		o.pending = o.pending[:0]
		o.resync = true
	default:
		o.pending = append(o.pending, f)
	}
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// take returns the queued frames, swapping in spare (emptied) as the new
// queue so the steady state allocates nothing, and whether a resync is due.
func (o *observer) take(spare [][]byte) ([][]byte, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	batch := o.pending
	o.pending = spare[:0]
	return batch, o.resync
}

func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	o := newObserver()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, ErrClosed.Error(), http.StatusServiceUnavailable)
		return
	}
	if len(s.observers) >= s.opts.MaxObservers {
		s.mu.Unlock()
		w.Header().Set("Retry-After", "10")
		http.Error(w, "too many observers of this run; try again later (raise web.Options.MaxObservers)", http.StatusServiceUnavailable)
		return
	}
	// Registering and copying the state under one lock hold means the
	// snapshot and the deltas that follow neither overlap nor leave a gap.
	parts := s.partsLocked()
	s.observers[o] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.observers, o)
		s.mu.Unlock()
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // no proxy buffering of the stream
	w.WriteHeader(http.StatusOK)

	log := s.opts.Logger.With("remote", r.RemoteAddr)
	write := func(frames ...[]byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		for _, f := range frames {
			if _, err := w.Write(f); err != nil {
				log.Debug("web: observer gone", "err", err)
				return false
			}
		}
		if err := rc.Flush(); err != nil {
			log.Debug("web: observer gone", "err", err)
			return false
		}
		return true
	}
	// retry: tells EventSource how soon to reconnect after a drop; every
	// reconnect starts with a snapshot, so nothing is lost.
	if !write([]byte("retry: 2000\n\n"), frame("snapshot", parts.encode())) {
		return
	}
	parts = snapshotParts{}

	heartbeat := time.NewTicker(s.opts.Heartbeat)
	defer heartbeat.Stop()
	var spare [][]byte
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-heartbeat.C:
			if !write([]byte(": keep-alive\n\n")) {
				return
			}
			continue
		case <-o.wake:
		}
		batch, resync := o.take(spare)
		if resync {
			s.mu.Lock()
			o.mu.Lock()
			parts := s.partsLocked()
			clear(o.pending)
			o.pending = o.pending[:0]
			o.resync = false
			dropped := o.dropped
			o.dropped = 0
			o.mu.Unlock()
			s.mu.Unlock()
			log.Debug("web: observer too slow, resending snapshot", "dropped_frames", dropped)
			if !write(frame("snapshot", parts.encode())) {
				return
			}
		} else if !write(batch...) {
			return
		}
		clear(batch)
		spare = batch
	}
}
