package trainer

import "math"

// learningRate is nanoGPT's schedule: linear warm-up from 0 over warmup steps,
// then cosine decay to minLR at the last step. step is 0-based.
func learningRate(step, warmup, total int, lr, minLR float64) float64 {
	if step < warmup {
		return lr * float64(step+1) / float64(warmup+1)
	}
	if total <= warmup {
		return lr
	}
	ratio := float64(step-warmup) / float64(total-warmup)
	if ratio > 1 {
		ratio = 1
	}
	coeff := 0.5 * (1 + math.Cos(math.Pi*ratio))
	return minLR + coeff*(lr-minLR)
}
