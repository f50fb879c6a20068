package compression_test

import (
	"fmt"

	"github.com/narrowband/narrowband/compression"
)

// One link direction with lz4: the flag returned by Encode goes into the
// frame header and comes back into Decode.
func ExampleLinkCodec() {
	cfg := compression.DefaultConfig()
	cfg.Method, cfg.Rank, cfg.Precision, cfg.ErrorFeedback = compression.MethodLowRank, 8, compression.FP16, true
	const rows, d = 64, 32 // tokens in the micro-batch, model width
	send, err := compression.NewLink(cfg, d, 256, 1337)
	if err != nil {
		panic(err)
	}
	recv, _ := compression.NewLink(cfg, d, 256, 1337)

	x := make([]float32, rows*d) // a rank-1 activation matrix
	for i := 0; i < rows; i++ {
		for j := 0; j < d; j++ {
			x[i*d+j] = float32(i%7-3) * float32(j%5+1)
		}
	}
	payload, lz4, err := send.Encode(nil, x, rows, d)
	if err != nil {
		panic(err)
	}
	y := make([]float32, rows*d)
	if err := recv.Decode(y, payload, lz4, rows, d); err != nil {
		panic(err)
	}
	fmt.Printf("codec %v: %d bytes instead of %d; x[10]=%.2f y[10]=%.2f\n",
		send.Codec.ID(), len(payload), 4*rows*d, x[10], y[10])
	// Output: codec lowrank: 1538 bytes instead of 8192; x[10]=-3.00 y[10]=-3.00
}

// The subspace codec: forward sends token ids and k coefficients per token,
// backward sends Uᵀg. Both ends derive U and E0 from the run seed.
func ExampleSubspace() {
	const seed, d, k, vocab, rows = 42, 64, 8, 256, 4
	s, err := compression.NewSubspace(seed, d, k, vocab, compression.FP32)
	if err != nil {
		panic(err)
	}
	// A residual stream of the constrained form h = E0[tok] + U·c.
	tokens := []int32{'g', 'o', '!', '\n'}
	c := make([]float32, rows*k)
	for i := range c {
		c[i] = float32(i%5) - 2
	}
	h := make([]float32, rows*d)
	s.Basis.Expand(h, c, rows)
	for i, t := range tokens {
		for j := 0; j < d; j++ {
			h[i*d+j] += s.E0[int(t)*d+j]
		}
	}
	fwd, _ := s.EncodeWithTokens(nil, h, tokens, rows, d)

	// The next stage, with its own copy built from the same seed.
	r, _ := compression.NewSubspace(seed, d, k, vocab, compression.FP32)
	h2 := make([]float32, rows*d)
	tok2 := make([]int32, rows)
	if err := r.DecodeWithTokens(h2, tok2, fwd, rows, d); err != nil {
		panic(err)
	}
	var maxDiff float32
	for i := range h {
		maxDiff = max(maxDiff, abs(h[i]-h2[i]))
	}
	fmt.Printf("forward: %d bytes (fp32 would be %d), tokens %q, max error < 1e-5: %v\n",
		len(fwd), 4*rows*d, string([]byte{byte(tok2[0]), byte(tok2[1])}), maxDiff < 1e-5)
	// Output: forward: 136 bytes (fp32 would be 1024), tokens "go", max error < 1e-5: true
}

// AutoRank turns link and compute measurements into rank changes.
func ExampleAutoRank() {
	const rows, d = 2048, 256
	a, _ := compression.NewAutoRank(compression.DefaultAutoRankConfig(compression.DefaultLadder(d, 256)), 0)
	var last *compression.RankEvent
	for i := 0; i < 10; i++ { // a steady 60 Mbps link, 100 ms compute
		if _, ev := a.Observe(compression.Observation{BytesPerSecond: 7.5e6, ComputeSeconds: 0.1, Rows: rows, Cols: d}); ev != nil {
			last = ev
		}
	}
	fmt.Println(last.Old, "->", last.New)
	// Output: rank=4/fp16 -> rank=64/fp16
}

func abs(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}
