package sim

import (
	"fmt"
	"testing"
)

// BenchmarkRun measures simulator speed at pipeline sizes sweeps use.
func BenchmarkRun(b *testing.B) {
	for _, kind := range schedules {
		for _, sm := range [][2]int{{4, 8}, {32, 64}} {
			S, M := sm[0], sm[1]
			b.Run(fmt.Sprintf("schedule=%v/S=%d/M=%d", kind, S, M), func(b *testing.B) {
				c := Config{Schedule: kind, Stages: S, Micro: M, Steps: 3, Compute: []Compute{{0.01, 0.02, 0.05}},
					Links:     []Link{{ForwardBPS: 80e6, BackwardBPS: 80e6, Latency: 0.03, ActivationBytes: 100_000, GradientBytes: 100_000}},
					Embedding: Embedding{BPS: 80e6, Latency: 0.05, Bytes: 1 << 20}}
				b.ReportAllocs()
				var r Result
				for b.Loop() {
					var err error
					if r, err = Run(c); err != nil {
						b.Fatal(err)
					}
				}
				actions := float64(S * (2*M + 1) * c.Steps)
				b.ReportMetric(actions*float64(b.N)/b.Elapsed().Seconds(), "actions/s")
				b.ReportMetric(r.StepTime, "sim-step-s")
			})
		}
	}
}
