package transport

import (
	"context"
	"sync"
	"time"
)

// waitForRoom is the back-pressure loop every Conn's Send shares: with mu
// held, it waits until full() is false or stop() has an error (closed ends,
// a failed link, ctx), re-checking whenever the channel changed() returns
// is closed (each implementation closes and replaces it on every change
// of its queue) or ctx ends. mu is held again on return. It reports how
// long it waited, for Stats.SendBlocked.
//
// The caller's full() must let a message into an empty queue whatever its
// size, so that no message deadlocks on a small buffer.
func waitForRoom(ctx context.Context, mu *sync.Mutex, changed func() chan struct{}, full func() bool, stop func() error) (time.Duration, error) {
	var since time.Time
	waited := func() time.Duration {
		if since.IsZero() {
			return 0
		}
		return time.Since(since)
	}
	for {
		if err := stop(); err != nil {
			return waited(), err
		}
		if err := ctx.Err(); err != nil {
			return waited(), err
		}
		if !full() {
			return waited(), nil
		}
		if since.IsZero() {
			since = time.Now()
		}
		ch := changed()
		mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		mu.Lock()
	}
}
