package transport_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/transport"
)

// benchThroughput pushes b.N messages of size bytes from a to b with one
// sender and one receiver goroutine, as the runtime does.
func benchThroughput(b *testing.B, a, r transport.Conn, size int) {
	b.Helper()
	ctx := context.Background()
	msg := make([]byte, size)
	done := make(chan error, 1)
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	go func() {
		for range b.N {
			if _, err := r.Recv(ctx); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range b.N {
		if err := a.Send(ctx, msg); err != nil {
			b.Fatalf("send %d: %v", i, err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkPipe(b *testing.B) {
	for _, size := range []int{64, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			a, r := transport.Pipe(transport.PipeOptions{})
			defer a.Close()
			defer r.Close()
			benchThroughput(b, a, r, size)
		})
	}
}

// BenchmarkShapeUnlimited is the shaper's own overhead: a zero profile, so
// every message is due at once and only the queue and goroutine hand-off
// cost time.
func BenchmarkShapeUnlimited(b *testing.B) {
	for _, size := range []int{64, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			ia, r := transport.Pipe(transport.PipeOptions{})
			a, err := transport.Shape(ia, transport.LinkProfile{}, transport.ShapeOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			defer r.Close()
			benchThroughput(b, a, r, size)
		})
	}
}

// BenchmarkShapeRate reports how close a shaped link's achieved rate comes
// to its configured bandwidth (rate-error-% should be near 0).
func BenchmarkShapeRate(b *testing.B) {
	for _, mbps := range []float64{60, 500} {
		b.Run(fmt.Sprintf("mbps=%v", mbps), func(b *testing.B) {
			ia, r := transport.Pipe(transport.PipeOptions{})
			a, err := transport.Shape(ia, transport.LinkProfile{BandwidthMbps: mbps}, transport.ShapeOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			defer r.Close()
			const size = 64 << 10
			start := time.Now()
			benchThroughput(b, a, r, size)
			got := float64(b.N*size*8) / time.Since(start).Seconds() / 1e6
			b.ReportMetric(got, "Mbit/s")
			b.ReportMetric(100*(got-mbps)/mbps, "rate-error-%")
		})
	}
}
