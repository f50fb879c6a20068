package web_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/web"
)

// countingReader discards a stream and counts its bytes.
type countingReader struct{ n *atomic.Int64 }

func (c countingReader) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

// BenchmarkPublishStep measures what the training loop pays per
// PublishStep, with no observer and with 50 plain-HTTP SSE observers
// reading as fast as they can, at full speed (rate=max, a stress test:
// the 50 streams then take most of the 2 cores, observers fall behind and
// are resynced with snapshots, and ns/publish mostly measures waiting for
// the CPU and GC assists) and at 100 steps/s (rate=100,
// still far faster than a real run steps). A step carries 4 stages
// and 3 links, like a 4-stage pipeline's record.
func BenchmarkPublishStep(b *testing.B) {
	rec := metrics.StepRecord{Step: 1, Tokens: 2048, Loss: 3.2, LR: 3e-4, TokensPerSecond: 9000, WallSeconds: 1, GradNorm: 1.1}
	for s := range 4 {
		rec.Stages = append(rec.Stages, metrics.StageStats{Stage: s, BusySeconds: 0.1, IdleSeconds: 0.02, NetWait: 0.01})
	}
	for l := range 3 {
		rec.Links = append(rec.Links, metrics.LinkStats{From: l, To: l + 1, BytesForward: 123456, BytesBackward: 120000, Messages: 8, Ratio: 8.1, RTTMillis: 25, Candidate: "srflx"})
	}
	for _, bc := range []struct {
		observers int
		rate      int // publishes per second; 0 for as fast as possible
	}{{0, 0}, {50, 0}, {0, 100}, {50, 100}} {
		observers := bc.observers
		rateName := "max"
		if bc.rate > 0 {
			rateName = fmt.Sprint(bc.rate)
		}
		b.Run(fmt.Sprintf("observers=%d/rate=%s", observers, rateName), func(b *testing.B) {
			srv := web.New(web.Options{})
			hs := httptest.NewServer(srv.Handler())
			defer hs.Close()
			defer srv.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var received atomic.Int64
			var wg sync.WaitGroup
			tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: observers}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			for range observers {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/events", nil)
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer resp.Body.Close()
					_, _ = io.Copy(countingReader{&received}, resp.Body)
				}()
			}
			for srv.Observers() < observers {
				time.Sleep(time.Millisecond)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(fmt.Sprint(rec)))) // order of the encoded record's size
			received.Store(0)
			start := time.Now()
			i := 0
			var inside time.Duration
			var tick *time.Ticker
			if bc.rate > 0 {
				tick = time.NewTicker(time.Second / time.Duration(bc.rate))
				defer tick.Stop()
			}
			for b.Loop() {
				if tick != nil {
					<-tick.C
				}
				i++
				rec.Step = i
				t0 := time.Now()
				srv.PublishStep(rec)
				inside += time.Since(t0)
			}
			el := time.Since(start)
			// ns/op is the loop's wall time, which on 2 cores includes the
			// observers' goroutines taking the CPU; ns/publish is the time
			// the caller spends inside PublishStep.
			b.ReportMetric(float64(inside.Nanoseconds())/float64(i), "ns/publish")
			b.ReportMetric(float64(i)/el.Seconds(), "publish/s")
			if observers > 0 {
				// Give readers a moment, then report how much reached them.
				time.Sleep(100 * time.Millisecond)
				b.ReportMetric(float64(received.Load())/float64(observers)/el.Seconds()/1e6, "MB/s/observer")
			}
			cancel()
			srv.Close()
			wg.Wait()
		})
	}
}
