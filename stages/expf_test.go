package stages

import (
	"math"
	"testing"
)

func TestExpf(t *testing.T) {
	worst := 0.0
	for x := float32(-100); x < 100; x += 0.00731 {
		want := math.Exp(float64(x))
		got := float64(expf(x))
		if want == 0 || math.IsInf(want, 0) {
			continue
		}
		if want < 0x1p-126 || math.IsInf(float64(float32(want)), 0) { // denormal, zero or overflow: exact float32 rounding of math.Exp
			if got != float64(float32(want)) {
				t.Fatalf("expf(%v) = %v, want %v", x, got, float32(want))
			}
			continue
		}
		worst = math.Max(worst, math.Abs(got-want)/want)
	}
	if worst > 3e-7 {
		t.Errorf("expf worst relative error %g, want ≤ 3e-7 (2 ulp)", worst)
	}
	for x := float32(-20); x < 20; x += 0.0013 {
		if d := math.Abs(float64(tanhf(x)) - math.Tanh(float64(x))); d > 4e-7 { // ~6 float32 ulp near ±1
			t.Fatalf("tanhf(%v) off by %g", x, d)
		}
	}
	if !math.IsNaN(float64(expf(float32(math.NaN())))) || expf(-200) != 0 || !math.IsInf(float64(expf(200)), 1) {
		t.Error("expf edge cases: want NaN→NaN, −200→0, 200→+Inf")
	}
}

func BenchmarkGelu(b *testing.B) {
	var x exec
	n := 1 << 20
	in, out := make([]float32, n), make([]float32, n)
	for i := range in {
		in[i] = float32(i%2000-1000) / 300
	}
	b.ReportAllocs()
	b.SetBytes(int64(4 * n))
	c0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		geluForward(&x, out, in, n)
	}
	b.ReportMetric((cpuSeconds()-c0)*1e9/float64(n*b.N), "cpu-ns/elem")
}
