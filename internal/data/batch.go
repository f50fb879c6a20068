package data

import (
	"math/rand/v2"
)

// Batch fills x (B*T) with windows of the token stream text and y (B*T)
// with the next id of each position, for micro-batch micro of optimizer
// step step. The windows are a pure function of (seed, step, micro), so any
// stage count, micro-batch split or resume point sees the same data; the
// offsets depend only on the stream's length, so a byte stream gives the
// batches it always gave.
func Batch(text Tokens, seed uint64, step, micro, B, T int, x, y []int32) {
	rng := rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15, uint64(step)<<20|uint64(micro)))
	n := text.Len() - T - 1
	for b := 0; b < B; b++ {
		off := 0
		if n > 0 {
			off = rng.IntN(n + 1)
		}
		for t := 0; t < T; t++ {
			x[b*T+t] = text.At(off + t)
		}
		copy(y[b*T:b*T+T-1], x[b*T+1:b*T+T])
		y[b*T+T-1] = text.At(off + T)
	}
}

// EvalWindows returns the held-out windows (each T+1 ids) every evaluation
// uses: n windows at seeded offsets, the same at every step and in every run
// with this seed, so val_loss values are comparable across steps and runs.
func EvalWindows(val Tokens, seed uint64, n, T int) [][]int32 {
	rng := rand.New(rand.NewPCG(seed^0x5851f42d4c957f2d, 0xe7a1))
	lim := val.Len() - T - 1
	out := make([][]int32, n)
	for i := range out {
		off := 0
		if lim > 0 {
			off = rng.IntN(lim + 1)
		}
		out[i] = make([]int32, min(T+1, val.Len()))
		val.Window(out[i], off)
	}
	return out
}

// Chunks cuts ids into consecutive windows of at most T+1 ids with no
// overlap — each window predicts its last len-1 ids — so every id after
// the first of each window is scored exactly once. A tail shorter than two
// ids predicts nothing and is dropped.
func Chunks(ids []int32, T int) [][]int32 {
	var out [][]int32
	for len(ids) >= 2 {
		n := min(len(ids), T+1)
		out = append(out, ids[:n])
		ids = ids[n:]
	}
	return out
}
