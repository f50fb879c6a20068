package web

import (
	"net/http"
	"time"
)

// Publishers never touch observers. Each publish appends its encoded frame
// to one shared ring (s.frames, numbered by s.seq) in O(1), whatever the
// number of observers; each observer's goroutine wakes every FlushInterval,
// copies the frames after its cursor and writes them in one syscall. An
// observer that falls more than QueueLen frames behind (a slow or stalled
// client) skips the lost frames and gets a fresh snapshot instead, which
// holds everything it missed.

// observer is one open /events stream; the Server tracks it only to count
// and cap the streams. (It must not be zero-sized: pointers to zero-sized
// values may be equal, and it is a map key.)
type observer struct{ remote string }

// framesSinceLocked appends the frames published after cursor to dst. It
// reports false when some were already overwritten. s.mu must be held.
func (s *Server) framesSinceLocked(dst [][]byte, cursor uint64) ([][]byte, bool) {
	n := uint64(len(s.frames))
	if s.seq-cursor > n {
		return dst, false
	}
	for q := cursor; q < s.seq; q++ {
		dst = append(dst, s.frames[q%n])
	}
	return dst, true
}

func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	o := &observer{remote: r.RemoteAddr}

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
	// Copying the state and taking the cursor under one lock hold means
	// the snapshot and the deltas that follow neither overlap nor leave a
	// gap.
	parts := s.partsLocked()
	cursor := s.seq
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
	// Frames are joined into one buffer so a batch costs one write
	// syscall, not one per frame.
	var out []byte
	write := func(frames ...[]byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		p := frames[0]
		if len(frames) > 1 {
			out = out[:0]
			for _, f := range frames {
				out = append(out, f...)
			}
			p = out
			if cap(out) > 1<<20 {
				out = nil // don't pin a burst's buffer for the stream's life
			}
		}
		if _, err := w.Write(p); err != nil {
			log.Debug("web: observer gone", "err", err)
			return false
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

	tick := time.NewTicker(s.opts.FlushInterval)
	defer tick.Stop()
	lastWrite := time.Now()
	var batch [][]byte
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		var ok bool
		batch, ok = s.framesSinceLocked(batch[:0], cursor)
		var snap snapshotParts
		if !ok {
			snap = s.partsLocked()
		}
		cursor = s.seq
		s.mu.Unlock()

		switch {
		case !ok:
			log.Debug("web: observer fell behind, resending snapshot")
			if !write(frame("snapshot", snap.encode())) {
				return
			}
		case len(batch) > 0:
			if !write(batch...) {
				return
			}
		case time.Since(lastWrite) >= s.opts.Heartbeat:
			// A comment line keeps proxies from closing an idle stream
			// and finds dead clients.
			if !write([]byte(": keep-alive\n\n")) {
				return
			}
		default:
			continue
		}
		lastWrite = time.Now()
		clear(batch)
	}
}
