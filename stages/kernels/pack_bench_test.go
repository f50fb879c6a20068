package kernels

import (
	"fmt"
	"testing"
)

// BenchmarkPackBTrans measures packing a transposed B (16-row panels), as
// every forward product y = x·Wᵀ and attention's q·kᵀ need.
func BenchmarkPackBTrans(b *testing.B) {
	for _, n := range []int{128, 768} {
		const kc = 256
		src := make([]float32, n*kc)
		dst := make([]float32, n*kc)
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			b.SetBytes(int64(4 * n * kc))
			b.ReportAllocs()
			cpu0 := processCPUTime()
			for b.Loop() {
				packB(dst, src, kc, true, 0, kc, 0, n, 16)
			}
			b.ReportMetric(float64(n*kc)*float64(b.N)/(processCPUTime()-cpu0).Seconds()/1e9, "Gfloat/cpu-s")
		})
	}
}

// BenchmarkPack measures packing A for the AVX2 kernel (floats packed per
// second): row copies when A is not transposed, 6-wide steps when it is, for
// a block that stays in cache and for a matrix that streams from memory.
func BenchmarkPack(b *testing.B) {
	for _, rows := range []int{144, 2048} {
		for _, trans := range []bool{false, true} {
			const kc = 256
			src := make([]float32, rows*kc)
			dst := make([]float32, blockM*kc)
			b.Run(fmt.Sprintf("rows=%d/trans=%v", rows, trans), func(b *testing.B) {
				b.SetBytes(int64(4 * rows * kc))
				b.ReportAllocs()
				cpu0 := processCPUTime()
				for b.Loop() {
					for ic := 0; ic < rows; ic += blockM {
						if trans {
							packA(dst, src, rows, true, ic, min(blockM, rows-ic), 0, kc, 6)
						} else {
							packARows(dst, src, kc, ic, min(blockM, rows-ic), 0, kc, 6)
						}
					}
				}
				b.ReportMetric(float64(rows*kc)*float64(b.N)/(processCPUTime()-cpu0).Seconds()/1e9, "Gfloat/cpu-s")
			})
		}
	}
}
