package trainer

import (
	"context"
	"fmt"
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

// BenchmarkObservers trains the same 2-stage run with 0 and 50 browsers'
// worth of live-view observers (server-sent event clients reading every
// update) and reports tokens/s, so the cost of watching is a ratio:
//
//	go test -run '^$' -bench Observers -benchtime 1x -count 6 ./internal/trainer
func BenchmarkObservers(b *testing.B) {
	for _, n := range []int{0, 50} {
		b.Run(fmt.Sprintf("observers=%d", n), func(b *testing.B) {
			c := tinyConfig(&testing.T{})
			c.Run.Steps = 40
			c.Model = benchModel(c.Model)
			c.Pipeline.Stages = 2
			c.Train.EvalInterval = 10
			srv := web.New(web.Options{})
			hs := httptest.NewServer(srv.Handler())
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/events", nil)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						return
					}
					defer resp.Body.Close()
					// A browser elsewhere parses the stream; here the
					// observer only drains it, so the benchmark counts
					// the server's cost, not its clients'.
					io.Copy(io.Discard, resp.Body)
				}()
			}
			for deadline := time.Now().Add(10 * time.Second); srv.Observers() < n && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if srv.Observers() < n {
				b.Fatalf("only %d of %d observers connected", srv.Observers(), n)
			}
			var tokens float64
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuSeconds()
			for i := 0; i < b.N; i++ {
				sum, err := Run(context.Background(), Options{Config: c, Out: b.TempDir(), Web: srv})
				if err != nil {
					b.Fatal(err)
				}
				tokens += float64(sum.Tokens)
			}
			b.ReportMetric(tokens/time.Since(start).Seconds(), "tokens/s")
			// On a shared machine wall time measures the neighbours too;
			// CPU time of this process (training and serving) does not.
			b.ReportMetric(tokens/(cpuSeconds()-cpu0), "tokens/cpu-s")
			b.StopTimer()
			cancel()
			srv.Close()
			hs.Close()
			wg.Wait()
		})
	}
}

// benchModel is a model big enough that a step takes tens of
// milliseconds, as real runs' steps do (the live view's cost is per step).
func benchModel(m config.Model) config.Model {
	m.NLayer, m.NHead, m.NEmbd, m.BlockSize = 2, 4, 128, 64
	return m
}

// cpuSeconds is this process's user+system CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
