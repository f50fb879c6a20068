package stages

import (
	"errors"
	"fmt"
)

// Config is the shape of the whole GPT model, the same for every stage of a
// split. Field names follow nanoGPT's GPTConfig.
type Config struct {
	// NLayer is the number of transformer blocks in the whole model (not in
	// one stage).
	NLayer int `toml:"n_layer"`
	// NHead is the number of attention heads; NEmbd must be a multiple of it.
	NHead int `toml:"n_head"`
	// NEmbd is the width of the residual stream (C).
	NEmbd int `toml:"n_embd"`
	// BlockSize is the longest context (T) the position table covers.
	BlockSize int `toml:"block_size"`
	// VocabSize is 256 for the byte vocabulary, so no tokenizer is needed.
	VocabSize int `toml:"vocab_size"`
	// Bias adds biases to every Linear and LayerNorm, as GPT-2 does.
	Bias bool `toml:"bias"`
	// Dropout must be 0: dropout would make forward passes differ between a
	// pipeline and a single process, and small models on lots of data do not
	// need it.
	Dropout float64 `toml:"dropout"`
}

// DefaultConfig is the small model the project benchmarks against PyTorch:
// 4 layers, 4 heads, d=256, context 128, byte vocabulary (3.3M parameters).
func DefaultConfig() Config {
	return Config{NLayer: 4, NHead: 4, NEmbd: 256, BlockSize: 128, VocabSize: 256, Bias: true}
}

// maxDim bounds every dimension so that sizes computed from a hostile or
// mistyped config cannot overflow int or ask for terabytes.
const maxDim = 1 << 16

// Validate reports every bad field, naming it and its value.
func (c Config) Validate() error {
	var errs []error
	pos := func(name string, v int) {
		if v <= 0 || v > maxDim {
			errs = append(errs, fmt.Errorf("model.%s = %d: must be in 1..%d", name, v, maxDim))
		}
	}
	pos("n_layer", c.NLayer)
	pos("n_head", c.NHead)
	pos("n_embd", c.NEmbd)
	pos("block_size", c.BlockSize)
	pos("vocab_size", c.VocabSize)
	if c.NHead > 0 && c.NEmbd > 0 && c.NEmbd%c.NHead != 0 {
		errs = append(errs, fmt.Errorf("model.n_embd = %d is not a multiple of model.n_head = %d: pick n_embd = n_head × head size", c.NEmbd, c.NHead))
	}
	if c.Dropout != 0 {
		errs = append(errs, fmt.Errorf("model.dropout = %g: only 0 is supported (dropout would make a split model differ from the whole one)", c.Dropout))
	}
	if len(errs) == 0 && c.NumParams() > 1<<31 {
		errs = append(errs, fmt.Errorf("model has %d parameters: more than the 2^31 this engine addresses; shrink n_layer, n_embd or vocab_size", c.NumParams()))
	}
	return errors.Join(errs...)
}

// NumParams is the parameter count of the whole model, counting the tied
// embedding once (as nanoGPT's get_num_params(non_embedding=False)).
func (c Config) NumParams() int64 {
	C, V, T, L := int64(c.NEmbd), int64(c.VocabSize), int64(c.BlockSize), int64(c.NLayer)
	perBlock := 12 * C * C
	ln := C
	if c.Bias {
		perBlock += 3*C + C + 4*C + C // c_attn, attn.c_proj, c_fc, mlp.c_proj biases
		ln = 2 * C
	}
	perBlock += 2 * ln
	return V*C + T*C + L*perBlock + ln
}
