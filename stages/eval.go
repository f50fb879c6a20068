package stages

import (
	"context"
	"fmt"
)

// EvalLoss returns the mean loss per predicted token of a whole-model stage
// over windows of token ids (each predicts its last len-1 ids), in batches of up to
// maxB windows of equal length, using activation slot slot. It is what a
// run reports as its held-out loss and what `narrowband eval` prints.
func EvalLoss(ctx context.Context, st *Stage, slot, maxB int, windows [][]int32) (float64, error) {
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
			x = append(x, w[:T]...)
			y = append(y, w[1:T+1]...)
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
		return 0, fmt.Errorf("evaluate: no tokens to predict")
	}
	return sum / float64(n), nil
}
