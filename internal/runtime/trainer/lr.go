package trainer

import "github.com/narrowband/narrowband/internal/runtime/engine"

// learningRate is engine.LearningRate (nanoGPT's warm-up and cosine
// decay; step is 0-based).
func learningRate(step, warmup, total int, lr, minLR float64) float64 {
	return engine.LearningRate(step, warmup, total, lr, minLR)
}
