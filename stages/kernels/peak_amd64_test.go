//go:build !purego

package kernels

import (
	"fmt"
	"math/rand/v2"
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

// BenchmarkMicroKernel runs the AVX2 micro-kernels alone on packed panels
// that stay in cache (24 A panels against one B panel, as in a real mc×kc
// block), to separate the kernel's own efficiency from packing and memory.
func BenchmarkMicroKernel(b *testing.B) {
	if !haveAVX2 {
		b.Skip("no AVX2+FMA on this CPU")
	}
	const kc, panels = 256, blockM / 6
	a := make([]float32, panels*6*kc)
	bp := make([]float32, 16*kc)
	c := make([]float32, panels*6*16)
	for i := range a {
		a[i] = float32(i%7) * 0.25
	}
	for i := range bp {
		bp[i] = float32(i%5) * 0.5
	}
	for _, variant := range []string{"interleaved", "rows"} {
		b.Run("variant="+variant, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := processCPUTime()
			for b.Loop() {
				for i := 0; i < panels; i++ {
					ap := a[i*6*kc:]
					ct := c[i*6*16:]
					if variant == "rows" {
						kern6x16RowsAsm(kc, ap, kc, bp, ct, 16, 1, 0)
					} else {
						kern6x16Asm(kc, ap, bp, ct, 16, 1, 0)
					}
				}
			}
			reportFlops(b, 2*6*16*kc*panels, processCPUTime()-cpu0)
		})
	}
}

// BenchmarkALayout compares the two ways the AVX2 kernel can take a
// row-major A: packed as six plain rows (cheap copy, six broadcast streams)
// or interleaved (transposing copy, one stream).
func BenchmarkALayout(b *testing.B) {
	if asmKernel == nil || asmKernel.rows == nil {
		b.Skip("no rows variant on this CPU")
	}
	rng := rand.New(rand.NewPCG(2, 3))
	for _, s := range []struct{ m, n, k int }{{2048, 256, 256}, {2048, 256, 1024}, {2048, 1024, 256}, {128, 64, 128}} {
		o := newOperands(rng, false, true, s.m, s.n, s.k, 0, 1, 0)
		for _, layout := range []string{"rows", "interleaved"} {
			b.Run(fmt.Sprintf("shape=%dx%dx%d/layout=%s", s.m, s.n, s.k, layout), func(b *testing.B) {
				k := *asmKernel
				if layout == "interleaved" {
					k.rows = nil
				}
				useKernel(b, &k)
				useThreads(b, 1)
				b.ReportAllocs()
				cpu0 := processCPUTime()
				for b.Loop() {
					o.run(o.c, Sgemm)
				}
				reportFlops(b, 2*float64(s.m*s.n*s.k), processCPUTime()-cpu0)
			})
		}
	}
}
