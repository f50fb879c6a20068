//go:build !purego

package kernels

import (
	"runtime"
	"sync"
	"testing"
)

// BenchmarkPeak measures this machine's fp32 FMA peak with an AVX2 loop of
// independent FMAs, on one core and on every core, as the yardstick for
// BenchmarkSgemm's GFLOP/s.
func BenchmarkPeak(b *testing.B) {
	if !haveAVX2 {
		b.Skip("no AVX2+FMA on this CPU")
	}
	for _, cores := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run("isa=avx2/cores="+itoa(cores), func(b *testing.B) {
			const iters = 1 << 20 // 192 flops each
			b.ReportAllocs()
			cpu0 := processCPUTime()
			for b.Loop() {
				var wg sync.WaitGroup
				for range cores {
					wg.Go(func() { fmaPeakAVX2(iters) })
				}
				wg.Wait()
			}
			reportFlops(b, 192*iters*float64(cores), processCPUTime()-cpu0)
		})
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + itoa(n%10)
}
