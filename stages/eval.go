package stages

import (
	"context"
	"fmt"
)

// EvalLoss returns the mean loss per predicted byte of a whole-model stage
// over windows (each predicts its last len-1 bytes), in batches of up to
// maxB windows of equal length, using activation slot slot. It is what a
// run reports as its held-out loss and what `narrowband eval` prints.
func EvalLoss(ctx context.Context, st *Stage, slot, maxB int, windows [][]byte) (float64, error) {
	var sum float64
	var n int64
	var x, y []int32
	for i := 0; i < len(windows); {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		T := len(windows[i]) - 1
		j := i
		for j < len(windows) && j-i < maxB && len(windows[j])-1 == T {
			j++
		}
		B := j - i
		x, y = x[:0], y[:0]
		for _, w := range windows[i:j] {
			for t := 0; t < T; t++ {
				x = append(x, int32(w[t]))
				y = append(y, int32(w[t+1]))
			}
		}
		v, err := st.ForwardLoss(slot, B, T, x, nil, y)
		if err != nil {
			return 0, fmt.Errorf("evaluate: %w", err)
		}
		sum += float64(v) * float64(B*T)
		n += int64(B * T)
		i = j
	}
	if n == 0 {
		return 0, fmt.Errorf("evaluate: no bytes to predict")
	}
	return sum / float64(n), nil
}
