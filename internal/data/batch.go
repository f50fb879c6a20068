package data

import (
	"math/rand/v2"
)

// Batch fills x (B*T) with windows of text and y (B*T) with the next byte of
// each position, for micro-batch micro of optimizer step step. The windows are
// a pure function of (seed, step, micro), so any stage count, micro-batch split
// or resume point sees the same data.
func Batch(text []byte, seed uint64, step, micro, B, T int, x, y []int32) {
	rng := rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15, uint64(step)<<20|uint64(micro)))
	n := len(text) - T - 1
	for b := 0; b < B; b++ {
		off := 0
		if n > 0 {
			off = rng.IntN(n + 1)
		}
		w := text[off : off+T+1]
		for t := 0; t < T; t++ {
			x[b*T+t] = int32(w[t])
			y[b*T+t] = int32(w[t+1])
		}
	}
}

// EvalWindows returns the held-out windows (each T+1 bytes) every evaluation
// uses: n windows at seeded offsets, the same at every step and in every run
// with this seed, so val_loss values are comparable across steps and runs.
func EvalWindows(val []byte, seed uint64, n, T int) [][]byte {
	rng := rand.New(rand.NewPCG(seed^0x5851f42d4c957f2d, 0xe7a1))
	lim := len(val) - T - 1
	out := make([][]byte, n)
	for i := range out {
		off := 0
		if lim > 0 {
			off = rng.IntN(lim + 1)
		}
		out[i] = val[off : off+T+1]
	}
	return out
}

// Chunks cuts text into consecutive windows of at most T+1 bytes with no
// overlap — each window predicts its last len-1 bytes — so every byte after
// the first of each window is scored exactly once. A tail shorter than two
// bytes predicts nothing and is dropped.
func Chunks(text []byte, T int) [][]byte {
	var out [][]byte
	for len(text) >= 2 {
		n := min(len(text), T+1)
		out = append(out, text[:n])
		text = text[n:]
	}
	return out
}
