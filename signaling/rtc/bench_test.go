package rtc

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkInProcess measures one-way throughput of a loopback link whose
// two ends live in this process, with messages of the given size.
func BenchmarkInProcess(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			a, c := connectPair(b, loopbackConfig())
			msg := make([]byte, size)
			ctx := context.Background()
			done := make(chan error, 1)
			go func() {
				for i := 0; i < b.N; i++ {
					if _, err := c.Recv(ctx); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			for i := 0; i < b.N; i++ {
				if err := a.Send(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			mb := float64(size*b.N) / 1e6
			b.ReportMetric(mb/time.Since(start).Seconds(), "MB/s")
			b.ReportMetric((cpuTime()-cpu0).Seconds()*1e3/mb, "cpu-ms/MB")
		})
	}
}
