package stages

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Sample returns the next token after context, drawn from a whole-model
// stage's distribution at the last position: logits divided by
// temperature, restricted to the topK most likely tokens (topK ≤ 0: all),
// then softmax. temperature ≤ 0 picks the most likely token. Only the last
// BlockSize tokens of context are used (no KV cache: each call runs the
// whole context). It uses activation slot 0.
func Sample(s *Stage, context []int32, temperature float64, topK int, r *rand.Rand) (int32, error) {
	if !s.first || !s.last {
		return 0, ErrNotWhole
	}
	if len(context) == 0 {
		return 0, fmt.Errorf("sample: empty context: give at least one token")
	}
	if len(context) > s.cfg.BlockSize {
		context = context[len(context)-s.cfg.BlockSize:]
	}
	T, V := len(context), s.cfg.VocabSize
	logits, err := s.ForwardLogits(0, 1, T, context, nil)
	if err != nil {
		return 0, fmt.Errorf("sample: %w", err)
	}
	last := logits[(T-1)*V : T*V]
	best := 0
	for i, x := range last {
		if x > last[best] {
			best = i
		}
	}
	if temperature <= 0 || topK == 1 {
		return int32(best), nil
	}
	idx := make([]int, V)
	for i := range idx {
		idx[i] = i
	}
	if topK > 0 && topK < V {
		sort.SliceStable(idx, func(a, b int) bool { return last[idx[a]] > last[idx[b]] })
		idx = idx[:topK]
	}
	p := make([]float64, len(idx))
	var sum float64
	for k, i := range idx {
		p[k] = math.Exp((float64(last[i]) - float64(last[best])) / temperature)
		sum += p[k]
	}
	u := r.Float64() * sum
	for k, i := range idx {
		u -= p[k]
		if u < 0 {
			return int32(i), nil
		}
	}
	return int32(idx[len(idx)-1]), nil
}

// Generate extends prompt by n sampled tokens (see Sample) with a PCG
// seeded by seed, and returns only the new tokens.
func Generate(s *Stage, prompt []int32, n int, temperature float64, topK int, seed uint64) ([]int32, error) {
	r := rand.New(rand.NewPCG(seed, 0x5a3b1e))
	ctx := append([]int32(nil), prompt...)
	for i := 0; i < n; i++ {
		t, err := Sample(s, ctx, temperature, topK, r)
		if err != nil {
			return nil, err
		}
		ctx = append(ctx, t)
	}
	return ctx[len(prompt):], nil
}
