package trainer

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/web"
)

// BenchmarkObservers trains the quickstart's model (2 stages) alternately
// with no live-view observer and with 50 (server-sent event clients
// draining every update), round after round so that drift in the
// machine's load falls on both alike, and reports tokens/s of each and
// their ratio:
//
//	go test -run '^$' -bench Observers -benchtime 4x ./internal/runtime/trainer
func BenchmarkObservers(b *testing.B) {
	c := tinyConfig(&testing.T{})
	c.Run.Steps = 8
	c.Model = benchModel(c.Model)
	c.Pipeline.Stages = 2
	c.Train.BatchSize = 16
	c.Train.MicroBatches = 4
	c.Train.EvalInterval = 4
	run := func(srv *web.Server) (tokens, wall, cpu float64) {
		t0, c0 := time.Now(), cpuSeconds()
		sum, err := Run(context.Background(), Options{Config: c, Out: b.TempDir(), Web: srv})
		if err != nil {
			b.Fatal(err)
		}
		return float64(sum.Tokens), time.Since(t0).Seconds(), cpuSeconds() - c0
	}
	quiet := web.New(web.Options{})
	watched := web.New(web.Options{})
	hs := httptest.NewServer(watched.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/events", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			// A browser elsewhere parses the stream; here the observer
			// only drains it, so the benchmark counts the server's cost.
			io.Copy(io.Discard, resp.Body)
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); watched.Observers() < 50 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if watched.Observers() < 50 {
		b.Fatalf("only %d of 50 observers connected", watched.Observers())
	}
	run(quiet) // warm caches and the worker pools
	var t0, w0, c0, t50, w50, c50 float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t, w, cp := run(quiet)
		t0, w0, c0 = t0+t, w0+w, c0+cp
		t, w, cp = run(watched)
		t50, w50, c50 = t50+t, w50+w, c50+cp
	}
	b.StopTimer()
	b.ReportMetric(t0/w0, "tokens/s-0obs")
	b.ReportMetric(t50/w50, "tokens/s-50obs")
	b.ReportMetric((t50/w50)/(t0/w0), "ratio-wall")
	b.ReportMetric((t50/c50)/(t0/c0), "ratio-cpu")
	cancel()
	watched.Close()
	quiet.Close()
	hs.Close()
	wg.Wait()
}

// benchModel is the quickstart's model (the live view's cost is per step,
// so the step must be as long as a real run's).
func benchModel(m config.Model) config.Model {
	m.NLayer, m.NHead, m.NEmbd, m.BlockSize = 4, 4, 256, 128
	return m
}

// cpuSeconds is this process's user+system CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
