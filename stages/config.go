package stages

import (
	"errors"
	"fmt"
	"math"
)

// Config is the shape of the whole model, the same for every stage of a
// split. Field names follow nanoGPT's GPTConfig; the Llama fields follow
// Hugging Face's LlamaConfig (their config.json key in each comment).
//
// The fields after Dropout are new with model families; they are left out
// of the JSON encoding when zero, so a GPT-2 config encodes exactly as it
// did before families existed. Config stays comparable (==).
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

	// Family is the architecture; the zero value is GPT-2 (see Family).
	Family Family `toml:"family" json:",omitempty"`
	// NKVHead is the number of key/value heads of grouped-query attention
	// (Llama only; num_key_value_heads): n_head must be a multiple of it,
	// each group of n_head/n_kv_head query heads shares one key and value
	// head. n_kv_head = n_head is plain multi-head attention. Required for
	// a Llama so that one model has one Config.
	NKVHead int `toml:"n_kv_head" json:",omitempty"`
	// IntermediateSize is the width of the SwiGLU MLP (Llama only;
	// intermediate_size). Llama's rule of thumb is 8/3·n_embd rounded up;
	// a multiple of 8 keeps the vector loops free of tails.
	IntermediateSize int `toml:"intermediate_size" json:",omitempty"`
	// RopeTheta is the base of the rotary position embedding's frequencies
	// (Llama only; rope_theta): 10000 for Llama 2, 500000 for Llama 3.
	RopeTheta float64 `toml:"rope_theta" json:",omitempty"`
	// RMSNormEps is the epsilon added to the mean square in RMSNorm (Llama
	// only; rms_norm_eps): 1e-5 for Llama 2, 1e-6 is Hugging Face's default.
	RMSNormEps float64 `toml:"rms_norm_eps" json:",omitempty"`
	// UntiedEmbeddings gives the LM head its own weight instead of the
	// token embedding (Llama only; tie_word_embeddings = !untied). GPT-2 is
	// always tied, so the zero value means tied for every family.
	UntiedEmbeddings bool `toml:"untied_embeddings" json:",omitempty"`
}

// DefaultConfig is the small model the project benchmarks against PyTorch:
// 4 layers, 4 heads, d=256, context 128, byte vocabulary (3.3M parameters).
func DefaultConfig() Config {
	return Config{NLayer: 4, NHead: 4, NEmbd: 256, BlockSize: 128, VocabSize: 256, Bias: true}
}

// DefaultLlamaConfig is a Llama of the width and depth of DefaultConfig:
// 4 layers, 4 heads (multi-head: n_kv_head 4), d=256, SwiGLU width 688 (so
// its parameter count, 3.3M, is the GPT's), context 128, byte vocabulary,
// rope_theta 10000, rms_norm_eps 1e-5, tied embeddings.
func DefaultLlamaConfig() Config {
	return Config{Family: FamilyLlama, NLayer: 4, NHead: 4, NKVHead: 4, NEmbd: 256, BlockSize: 128, VocabSize: 256,
		IntermediateSize: 688, RopeTheta: 10000, RMSNormEps: 1e-5}
}

// Tied says the LM head is the token embedding (always for GPT-2).
func (c Config) Tied() bool { return !c.UntiedEmbeddings }

// HeadSize is n_embd / n_head, the width of one attention head.
func (c Config) HeadSize() int {
	if c.NHead <= 0 {
		return 0
	}
	return c.NEmbd / c.NHead
}

// kvHeads is the number of key/value heads: n_head for GPT-2.
func (c Config) kvHeads() int {
	if c.Family == FamilyLlama {
		return c.NKVHead
	}
	return c.NHead
}

// maxDim bounds every dimension so that sizes computed from a hostile or
// mistyped config cannot overflow int or ask for terabytes.
const maxDim = 1 << 16

// A FieldError is one bad model setting: the key as a run's TOML file
// spells it ("model.n_head"), the value, and what is allowed. The run
// config's loader locates the key's line through ConfigKey.
type FieldError struct {
	Key     string
	Value   any
	Allowed string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s = %v: %s", e.Key, e.Value, e.Allowed) }

// ConfigKey names the key.
func (e *FieldError) ConfigKey() string { return e.Key }

// Validate reports every bad field, each a *FieldError naming it, its value
// and what is allowed. It is the one validator of a run's [model] table.
func (c Config) Validate() error {
	var errs []error
	bad := func(key string, v any, allowed string) {
		errs = append(errs, &FieldError{Key: "model." + key, Value: v, Allowed: allowed})
	}
	pos := func(name string, v int) {
		if v <= 0 || v > maxDim {
			bad(name, v, fmt.Sprintf("must be in 1..%d", maxDim))
		}
	}
	pos("n_layer", c.NLayer)
	pos("n_head", c.NHead)
	pos("n_embd", c.NEmbd)
	pos("block_size", c.BlockSize)
	pos("vocab_size", c.VocabSize)
	if c.NHead > 0 && c.NEmbd > 0 && c.NEmbd%c.NHead != 0 {
		bad("n_embd", c.NEmbd, fmt.Sprintf("must be a multiple of model.n_head (%d): pick n_embd = n_head × head size", c.NHead))
	}
	if c.Dropout != 0 {
		bad("dropout", c.Dropout, "only 0 is supported (dropout would make a split model differ from the whole one)")
	}
	switch c.Family {
	case FamilyGPT2:
		// The Llama settings must not be set on a GPT-2, so that a config
		// meant for a Llama but missing family = "llama" is caught.
		for _, f := range []struct {
			name string
			v    any
			set  bool
		}{
			{"n_kv_head", c.NKVHead, c.NKVHead != 0}, {"intermediate_size", c.IntermediateSize, c.IntermediateSize != 0},
			{"rope_theta", c.RopeTheta, c.RopeTheta != 0}, {"rms_norm_eps", c.RMSNormEps, c.RMSNormEps != 0}, {"untied_embeddings", c.UntiedEmbeddings, c.UntiedEmbeddings},
		} {
			if f.set {
				bad(f.name, f.v, fmt.Sprintf("is a Llama setting but model.family = %q; set family = \"llama\" or remove it", c.Family))
			}
		}
	case FamilyLlama:
		c.validateLlama(bad)
	default:
		bad("family", int(c.Family), "want gpt2 or llama")
	}
	if len(errs) == 0 && c.NumParams() > 1<<31 {
		bad("n_layer", c.NLayer, fmt.Sprintf("the model has %d parameters: more than the 2^31 this engine addresses; shrink n_layer, n_embd or vocab_size", c.NumParams()))
	}
	return errors.Join(errs...)
}

func (c Config) validateLlama(bad func(key string, v any, allowed string)) {
	if c.Bias {
		bad("bias", true, "a Llama has no biases; set bias = false")
	}
	if c.NKVHead <= 0 || c.NKVHead > maxDim {
		bad("n_kv_head", c.NKVHead, fmt.Sprintf("must be in 1..%d (n_head = %d for multi-head attention)", maxDim, c.NHead))
	} else if c.NHead > 0 && c.NHead%c.NKVHead != 0 {
		bad("n_kv_head", c.NKVHead, fmt.Sprintf("must divide model.n_head = %d: each key/value head serves n_head/n_kv_head query heads", c.NHead))
	}
	if c.IntermediateSize <= 0 || c.IntermediateSize > 4*maxDim {
		bad("intermediate_size", c.IntermediateSize, fmt.Sprintf("must be in 1..%d (Llama uses about 8/3·n_embd)", 4*maxDim))
	}
	if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		bad("rope_theta", c.RopeTheta, "must be a positive number (10000 for Llama 2, 500000 for Llama 3)")
	}
	if !(c.RMSNormEps > 0 && c.RMSNormEps < 1) {
		bad("rms_norm_eps", c.RMSNormEps, "must be in (0, 1) (1e-5 or 1e-6 as Llama)")
	}
	if hs := c.HeadSize(); c.NHead > 0 && c.NEmbd%c.NHead == 0 && hs%2 != 0 {
		bad("n_head", c.NHead, fmt.Sprintf("n_embd / n_head = %d / %d = %d: rotary embeddings need an even head size", c.NEmbd, c.NHead, hs))
	}
}

// NumParams is the parameter count of the whole model, counting the tied
// embedding once (as nanoGPT's get_num_params(non_embedding=False)).
func (c Config) NumParams() int64 {
	if c.Family == FamilyLlama {
		C, V, L := int64(c.NEmbd), int64(c.VocabSize), int64(c.NLayer)
		kv := int64(c.NKVHead) * int64(c.HeadSize())
		perBlock := C*C + 2*kv*C + C*C + 3*C*int64(c.IntermediateSize) + 2*C
		n := V*C + L*perBlock + C
		if c.UntiedEmbeddings {
			n += V * C
		}
		return n
	}
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
