package stages

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkFamilyStep is forward+backward (no optimizer) of the reference
// shape in both families: GPT 4 layers, d=256, 4 heads, context 128,
// batch 16 (DefaultConfig, 3.3M parameters) and the Llama of the same
// width and depth (DefaultLlamaConfig: SwiGLU width 688, so also 3.3M),
// with multi-head (kv=4) and grouped-query (kv=2, 3.0M) attention. Compare
// the tokens/s (and tokens per CPU-second) of the sub-benchmarks of one run.
func BenchmarkFamilyStep(b *testing.B) {
	gqa := DefaultLlamaConfig()
	gqa.NKVHead = 2
	for _, c := range []struct {
		name string
		cfg  Config
	}{{"family=gpt2", DefaultConfig()}, {"family=llama/kv=4", DefaultLlamaConfig()}, {"family=llama/kv=2", gqa}} {
		b.Run(c.name, func(b *testing.B) {
			cfg := c.cfg
			B, T := 16, cfg.BlockSize
			s, err := NewStage(cfg, 0, cfg.NLayer, true, true, B, 1)
			if err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 1))
			tok, tgt := randTokens(r, B*T, cfg.VocabSize), randTokens(r, B*T, cfg.VocabSize)
			b.ReportAllocs()
			b.SetBytes(int64(4 * B * T))
			cpu0 := cpuSeconds()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.ZeroGrad()
				s.ForwardLoss(0, B, T, tok, nil, tgt)
				s.Backward(0, nil, 1)
			}
			b.StopTimer()
			tokens := float64(B * T * b.N)
			b.ReportMetric(tokens/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric(tokens/(cpuSeconds()-cpu0), "tokens/cpu-s")
			b.ReportMetric(float64(cfg.NumParams())/1e6, "Mparams")
		})
	}
}
