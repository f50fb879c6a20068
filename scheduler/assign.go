package scheduler

import (
	"fmt"
	"math"
)

// Range is the half-open block range [Lo, Hi) a stage holds.
type Range struct{ Lo, Hi int }

// Len is the number of blocks in the range.
func (r Range) Len() int { return r.Hi - r.Lo }

func (r Range) String() string { return fmt.Sprintf("[%d,%d)", r.Lo, r.Hi) }

// Costs are relative compute costs (any unit, e.g. seconds or FLOPs per
// token) used to balance stages.
type Costs struct {
	// Block is the cost of one transformer block.
	Block float64
	// PerBlock, when set, overrides Block with one cost per block (length
	// nLayer), e.g. measured timings.
	PerBlock []float64
	// Embedding is the extra cost of the first stage (token + position
	// embedding lookup and its backward).
	Embedding float64
	// Head is the extra cost of the last stage: final LayerNorm, LM head
	// and loss. For GPT it is about vocab/(12·d) blocks (the head's 2·d·V
	// FLOPs per token against a block's 24·d²); see GPTCosts.
	Head float64
}

// GPTCosts returns costs in units of one block for a nanoGPT-style GPT of
// width d and vocabulary vocab, counting matmul FLOPs per token only
// (attention scores and the embedding lookup are ignored; measured timings
// in PerBlock are better when available).
func GPTCosts(d, vocab int) Costs {
	return Costs{Block: 1, Head: float64(vocab) / (12 * float64(d))}
}

func (c Costs) validate(nLayer int) error {
	bad := func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) || v < 0 }
	if c.PerBlock != nil {
		if len(c.PerBlock) != nLayer {
			return fmt.Errorf("costs: PerBlock has %d entries, want one per layer (%d): %w", len(c.PerBlock), nLayer, ErrBadSplit)
		}
		for i, v := range c.PerBlock {
			if bad(v) {
				return fmt.Errorf("costs: PerBlock[%d] = %v, want a finite cost ≥ 0: %w", i, v, ErrBadSplit)
			}
		}
	} else if bad(c.Block) {
		return fmt.Errorf("costs: Block = %v, want a finite cost ≥ 0: %w", c.Block, ErrBadSplit)
	}
	if bad(c.Embedding) || bad(c.Head) {
		return fmt.Errorf("costs: Embedding = %v, Head = %v, want finite costs ≥ 0: %w", c.Embedding, c.Head, ErrBadSplit)
	}
	return nil
}

func (c Costs) block(i int) float64 {
	if c.PerBlock != nil {
		return c.PerBlock[i]
	}
	return c.Block
}

// StageCosts returns the cost of each stage of ranges under c.
func StageCosts(ranges []Range, c Costs) []float64 {
	out := make([]float64, len(ranges))
	for s, r := range ranges {
		for i := r.Lo; i < r.Hi; i++ {
			out[s] += c.block(i)
		}
	}
	if len(out) > 0 {
		out[0] += c.Embedding
		out[len(out)-1] += c.Head
	}
	return out
}

// Assign splits nLayer blocks into stages contiguous ranges, each of at
// least one block, minimising the most expensive stage (the pipeline runs
// at the pace of its slowest stage); among splits with the same maximum it
// picks the one with the smallest sum of squared stage costs, so the
// remaining stages are balanced too; remaining ties give earlier stages
// fewer blocks, because under 1F1B earlier stages hold more micro-batches of
// activations (S-i) and stage 0 also feeds the data. It is exact (dynamic
// programming, O(stages·nLayer²)).
func Assign(nLayer, stages int, c Costs) ([]Range, error) {
	if stages < 1 {
		return nil, fmt.Errorf("assign: stages = %d, want ≥ 1: %w", stages, ErrBadSplit)
	}
	if nLayer < stages {
		return nil, fmt.Errorf("assign: %d layers cannot fill %d stages (each stage needs ≥ 1 block); use at most %d stages: %w",
			nLayer, stages, nLayer, ErrBadSplit)
	}
	if err := c.validate(nLayer); err != nil {
		return nil, fmt.Errorf("assign: %w", err)
	}
	prefix := make([]float64, nLayer+1)
	for i := range nLayer {
		prefix[i+1] = prefix[i] + c.block(i)
	}
	cost := func(s, lo, hi int) float64 {
		v := prefix[hi] - prefix[lo]
		if s == 0 {
			v += c.Embedding
		}
		if s == stages-1 {
			v += c.Head
		}
		return v
	}
	type best struct {
		max, sq float64
		cut     int // start of stage s
		ok      bool
	}
	// dp[s][n]: best split of blocks [0,n) into stages 0..s.
	dp := make([][]best, stages)
	for s := range dp {
		dp[s] = make([]best, nLayer+1)
	}
	for n := 1; n <= nLayer; n++ {
		v := cost(0, 0, n)
		dp[0][n] = best{max: v, sq: v * v, ok: true}
	}
	for s := 1; s < stages; s++ {
		for n := s + 1; n <= nLayer; n++ {
			var b best
			for cut := s; cut < n; cut++ {
				p := dp[s-1][cut]
				if !p.ok {
					continue
				}
				v := cost(s, cut, n)
				cand := best{max: math.Max(p.max, v), sq: p.sq + v*v, cut: cut, ok: true}
				if !b.ok || cand.max < b.max || (cand.max == b.max && cand.sq < b.sq) {
					b = cand
				}
			}
			dp[s][n] = b
		}
	}
	ranges := make([]Range, stages)
	hi := nLayer
	for s := stages - 1; s >= 0; s-- {
		lo := dp[s][hi].cut
		ranges[s] = Range{Lo: lo, Hi: hi}
		hi = lo
	}
	return ranges, nil
}

// Split turns explicit block counts per stage (the config's split, e.g.
// [3, 3, 2]) into ranges, checking that every stage has at least one block
// and the counts add up to nLayer.
func Split(nLayer int, counts []int) ([]Range, error) {
	if len(counts) == 0 {
		return nil, fmt.Errorf("split is empty: give one block count per stage, e.g. [%d]: %w", nLayer, ErrBadSplit)
	}
	sum := 0
	for i, n := range counts {
		if n < 1 {
			return nil, fmt.Errorf("split %v: stage %d has %d blocks, every stage needs ≥ 1: %w", counts, i, n, ErrBadSplit)
		}
		if n > nLayer {
			return nil, fmt.Errorf("split %v: stage %d has %d blocks but the model has %d layers: %w", counts, i, n, nLayer, ErrBadSplit)
		}
		sum += n
	}
	if sum != nLayer {
		return nil, fmt.Errorf("split %v sums to %d blocks but the model has %d layers (n_layer); make the counts add up to %d: %w",
			counts, sum, nLayer, nLayer, ErrBadSplit)
	}
	ranges := make([]Range, len(counts))
	lo := 0
	for i, n := range counts {
		ranges[i] = Range{Lo: lo, Hi: lo + n}
		lo += n
	}
	return ranges, nil
}
