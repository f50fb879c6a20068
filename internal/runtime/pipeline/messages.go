package pipeline

import (
	"math/rand/v2"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/wire"
)

// MessageBytes is the wire size of one activation and one gradient message
// of cfg's codec (frame header and clock stamp included), from encoding a
// random micro-batch, and of the tied-embedding gradient message.
func MessageBytes(cfg config.Config) (act, grad, emb int64, err error) {
	cc := cfg.Compression
	rows := cfg.Train.BatchSize / cfg.Train.MicroBatches * cfg.Model.BlockSize
	C := cfg.Model.NEmbd
	x := make([]float32, rows*C)
	r := rand.New(rand.NewPCG(uint64(cfg.Run.Seed), 7))
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	if cc.Method == compression.MethodSubspaceTC {
		// A stateful coder: code a few random micro-batches through one
		// direction's encoder. White noise has nothing for its predictors
		// and rotation to find, so this is an upper bound of what trained
		// activations cost (docs/compression-tc.md measures those).
		size := func(dir compression.Direction) (int64, error) {
			enc, _, err := compression.NewTCPair(cc, C, cfg.Model.VocabSize, uint64(cfg.Run.Seed), dir, true, cfg.Model.BlockSize)
			if err != nil {
				return 0, err
			}
			ids := make([]int32, rows)
			for i := range ids {
				ids[i] = int32(r.IntN(cfg.Model.VocabSize))
			}
			var p []byte
			for k := 0; k < 4; k++ {
				if p, err = enc.Encode(p[:0], x, ids, rows, C); err != nil {
					return 0, err
				}
			}
			return int64(len(p) + wire.HeaderSize + stampSize), nil
		}
		if act, err = size(compression.DirForward); err != nil {
			return
		}
		if grad, err = size(compression.DirBackward); err != nil {
			return
		}
		emb = tiedBytes(cfg, int(cc.Rank))
		return
	}
	size := func() (int64, error) {
		lc, err := compression.NewLink(cc, cfg.Model.NEmbd, cfg.Model.VocabSize, uint64(cfg.Run.Seed))
		if err != nil {
			return 0, err
		}
		var p []byte
		// Twice: codecs with warm starts settle after the first call.
		for k := 0; k < 2; k++ {
			if p, _, err = lc.Encode(p[:0], x, rows, C); err != nil {
				return 0, err
			}
		}
		return int64(len(p) + wire.HeaderSize + stampSize), nil
	}
	if act, err = size(); err != nil {
		return
	}
	if grad, err = size(); err != nil {
		return
	}
	// The tied embedding's gradient: d values per row, or k coefficients
	// under the subspace constraint, or nothing with an untied head.
	width := C
	if cc.Method == compression.MethodSubspace {
		width = int(cc.Rank)
	}
	emb = tiedBytes(cfg, width)
	return
}

// tiedBytes is the tied-embedding gradient message of vocab × width values
// in compression.tied_precision: 4 bytes a value in fp32, 2 in bf16, int8's
// one a value plus a float32 scale per block.
func tiedBytes(cfg config.Config, width int) int64 {
	if engine.UntiedHead(cfg) {
		width = 0
	}
	n := int64(cfg.Model.VocabSize * width)
	var b int64
	switch cfg.Compression.TiedPrecision {
	case compression.BF16:
		b = 2 * n
	case compression.Int8:
		blk := int64(max(cfg.Compression.BlockSize, 1))
		b = n + 4*((n+blk-1)/blk)
	default:
		b = 4 * n
	}
	return b + wire.HeaderSize + stampSize
}
