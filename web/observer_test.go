package web

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
)

// stuckWriter is a ResponseWriter whose client does not read: Write blocks
// until the gate opens.
type stuckWriter struct {
	gate chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
	hdr  http.Header
}

func (w *stuckWriter) Header() http.Header { return w.hdr }
func (w *stuckWriter) WriteHeader(int)     {}
func (w *stuckWriter) Flush()              {}
func (w *stuckWriter) Write(p []byte) (int, error) {
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestSlowObserverDoesNotBlockTraining: with one observer that reads
// nothing, publishing stays fast, and once the observer drains it gets a
// fresh snapshot holding everything it missed.
func TestSlowObserverDoesNotBlockTraining(t *testing.T) {
	s := New(Options{QueueLen: 16, MaxSteps: 100000, FlushInterval: time.Millisecond})
	w := &stuckWriter{gate: make(chan struct{}), hdr: http.Header{}}
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/events", nil)
	done := make(chan struct{})
	go func() { s.serveEvents(w, req); close(done) }()
	for s.Observers() == 0 {
		time.Sleep(time.Millisecond)
	}

	const n = 20000
	start := time.Now()
	for i := 1; i <= n; i++ {
		s.PublishStep(metrics.StepRecord{Step: i, Tokens: int64(i), Loss: 3})
	}
	took := time.Since(start)
	if took > 2*time.Second {
		t.Errorf("%d publishes with a stuck observer took %v; publishing must not wait on observers", n, took)
	}
	close(w.gate) // the client starts reading
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		out := w.buf.String()
		w.mu.Unlock()
		if i := bytes.LastIndex([]byte(out), []byte("event: snapshot\ndata: ")); i > 0 {
			data := out[i+len("event: snapshot\ndata: "):]
			if j := bytes.IndexByte([]byte(data), '\n'); j > 0 {
				var snap struct {
					Steps []struct{ Step int } `json:"steps"`
				}
				if err := json.Unmarshal([]byte(data[:j]), &snap); err != nil {
					t.Fatalf("resync snapshot: %v", err)
				}
				if len(snap.Steps) == n && snap.Steps[n-1].Step == n {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot with all %d steps 5s after the observer started reading", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if s.Observers() != 0 {
		t.Error("observer not removed after its request ended")
	}
	t.Logf("%d publishes with a stuck observer: %v (%v each)", n, took, took/n)
}
