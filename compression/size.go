package compression

import "math"

// PayloadSize predicts the payload bytes one rows×d message costs under cfg
// (lz4 off; vocab matters only for subspace token ids), for the simulator and for planning: exact for none, fp16,
// bf16, int8, lowrank and subspace (forward, with token ids; backward is
// rows less); for topk the index gaps depend on the data, so it assumes
// evenly spread indices (gaps of 1/KFraction). Returns 0 for an invalid
// config, and for subspace-tc, whose entropy-coded size depends on the
// data. With Rank = RankAuto it prices the lowest auto rank (4).
func PayloadSize(cfg Config, rows, d, vocab int) int {
	if cfg.Validate() != nil || rows < 0 || d < 1 || vocab < 1 {
		return 0
	}
	n := rows * d
	switch cfg.Method {
	case MethodNone:
		return 4 * n
	case MethodFP16, MethodBF16:
		return 2 * n
	case MethodInt8:
		bs := cfg.BlockSize
		return uvarintLen(uint64(bs)) + 4*((n+bs-1)/bs) + n
	case MethodTopK:
		k := (&TopK{Frac: cfg.KFraction}).k(n)
		gap := uvarintLen(uint64(math.Ceil(1 / cfg.KFraction)))
		return 1 + uvarintLen(uint64(k)) + k*gap + k*precBytes(cfg.Precision)
	case MethodLowRank:
		r := int(cfg.Rank)
		if cfg.Rank == RankAuto {
			r = 4
		}
		return Setting{Rank: r, Precision: cfg.Precision}.PayloadBytes(rows, d)
	case MethodSubspace:
		k := min(int(cfg.Rank), d)
		vocabWidth := (&Subspace{Vocab: vocab}).tokWidth()
		coeffs := rows * k * precBytes(cfg.Precision)
		if cfg.Precision == Int8 {
			coeffs += 4 * rows
		}
		if b := lowBits(cfg.Precision); b > 0 {
			coeffs = 2*rows + lowCodeBytes(rows*k, b)
		}
		return 3 + uvarintLen(uint64(rows*vocabWidth)) + rows*vocabWidth + coeffs
	}
	return 0
}
