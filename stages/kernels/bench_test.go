package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// benchShapes are the model's products (batch 16 × context 128 = 2048 rows,
// d = 256, 4 heads of 64) named m×n×k with op(A) m×k and op(B) k×n.
var benchShapes = []struct {
	what           string
	m, n, k        int
	transA, transB bool
}{
	{"fwd qkv", 2048, 768, 256, false, true},
	{"fwd attn proj / lm head", 2048, 256, 256, false, true},
	{"fwd mlp up", 2048, 1024, 256, false, true},
	{"fwd mlp down", 2048, 256, 1024, false, true},
	{"dX qkv", 2048, 256, 768, false, false},
	{"dX mlp up", 2048, 256, 1024, false, false},
	{"dX mlp down", 2048, 1024, 256, false, false},
	{"dW qkv", 768, 256, 2048, true, false},
	{"dW mlp up", 1024, 256, 2048, true, false},
	{"dW mlp down", 256, 1024, 2048, true, false},
	{"TT coverage", 2048, 256, 256, true, true},
	{"att scores q·kᵀ", 128, 128, 64, false, true},
	{"att out p·v", 128, 64, 128, false, false},
	{"att dv pᵀ·dy", 128, 64, 128, true, false},
}

// BenchmarkSgemm measures GFLOP/s (2·m·n·k per call) of the fast Sgemm,
// the reference and gonum's pure-Go BLAS on the model's shapes. The
// reference runs only on the small shapes: on the big ones it takes seconds
// per call. SetBytes counts the bytes of A, B and C touched once.
func BenchmarkSgemm(b *testing.B) {
	type impl struct {
		name string
		fn   func(bool, bool, int, int, int, float32, []float32, int, []float32, int, float32, []float32, int)
	}
	impls := []impl{
		{"fast", Sgemm},
		{"ref", SgemmRef},
		{"gonum", gonumSgemm},
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for _, s := range benchShapes {
		var o *operands // made on first use, so filtered-out shapes cost nothing
		for _, im := range impls {
			if im.name == "ref" && s.m*s.n*s.k > 4<<20 {
				continue
			}
			threadCounts := []int{1, 2}
			if im.name != "fast" {
				threadCounts = []int{0} // their own threading
			}
			for _, threads := range threadCounts {
				name := fmt.Sprintf("shape=%dx%dx%d/trans=%s/impl=%s", s.m, s.n, s.k, transName(s.transA, s.transB), im.name)
				if threads > 0 {
					name += fmt.Sprintf("/threads=%d", threads)
				}
				b.Run(name, func(b *testing.B) {
					if threads > 0 {
						useThreads(b, threads)
					}
					if o == nil {
						o = newOperands(rng, s.transA, s.transB, s.m, s.n, s.k, 0, 1, 0)
					}
					b.ReportAllocs()
					b.SetBytes(int64(4 * (s.m*s.k + s.k*s.n + s.m*s.n)))
					cpu0 := processCPUTime()
					for b.Loop() {
						o.run(o.c, im.fn)
					}
					reportFlops(b, 2*float64(s.m)*float64(s.n)*float64(s.k), processCPUTime()-cpu0)
				})
			}
		}
	}
}

// BenchmarkKernel compares the micro-kernels this machine can run through
// the whole Sgemm on one core, so the portable path's cost is on record.
func BenchmarkKernel(b *testing.B) {
	rng := rand.New(rand.NewPCG(2, 2))
	const m, n, k = 2048, 256, 256
	o := newOperands(rng, false, true, m, n, k, 0, 1, 0)
	for _, kern := range kernelsUnderTest() {
		b.Run("kernel="+kern.name, func(b *testing.B) {
			useKernel(b, kern)
			useThreads(b, 1)
			b.ReportAllocs()
			b.SetBytes(int64(4 * (m*k + k*n + m*n)))
			cpu0 := processCPUTime()
			for b.Loop() {
				o.run(o.c, Sgemm)
			}
			reportFlops(b, 2*m*n*k, processCPUTime()-cpu0)
		})
	}
}

// reportFlops reports wall-clock GFLOP/s and, where CPU time is measured,
// GFLOP per CPU-second (per core busy), which the other jobs on a shared
// machine do not distort.
func reportFlops(b *testing.B, flopsPerOp float64, cpu time.Duration) {
	flops := flopsPerOp * float64(b.N)
	b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	if cpu > 0 {
		b.ReportMetric(flops/cpu.Seconds()/1e9, "GFLOP/cpu-s")
	}
}

func gonumSgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, bm []float32, ldb int, beta float32, c []float32, ldc int) {
	tA, tB := blas.NoTrans, blas.NoTrans
	if transA {
		tA = blas.Trans
	}
	if transB {
		tB = blas.Trans
	}
	gonum.Implementation{}.Sgemm(tA, tB, m, n, k, alpha, a, lda, bm, ldb, beta, c, ldc)
}
