package stages

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrNoHFConfig is returned for a config Hugging Face's config.json cannot
// describe as this engine runs it.
var ErrNoHFConfig = errors.New("no Hugging Face config.json for this model")

// hfLlamaConfig is the config.json Hugging Face's LlamaConfig reads
// (save_pretrained writes these keys, transformers_version aside). Every
// behaviour switch is written out, not left to Hugging Face's defaults,
// which differ from ours (rms_norm_eps 1e-6, bos 1 / eos 2, untied).
type hfLlamaConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	HiddenSize            int             `json:"hidden_size"`
	IntermediateSize      int             `json:"intermediate_size"`
	NumAttentionHeads     int             `json:"num_attention_heads"`
	NumKeyValueHeads      int             `json:"num_key_value_heads"`
	NumHiddenLayers       int             `json:"num_hidden_layers"`
	HeadDim               int             `json:"head_dim"`
	HiddenAct             string          `json:"hidden_act"`
	RMSNormEps            float64         `json:"rms_norm_eps"`
	RopeTheta             float64         `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	MaxPositionEmbeddings int             `json:"max_position_embeddings"`
	VocabSize             int             `json:"vocab_size"`
	TieWordEmbeddings     bool            `json:"tie_word_embeddings"`
	AttentionBias         bool            `json:"attention_bias"`
	AttentionDropout      float64         `json:"attention_dropout"`
	MLPBias               bool            `json:"mlp_bias"`
	InitializerRange      float64         `json:"initializer_range"`
	PretrainingTP         int             `json:"pretraining_tp"`
	UseCache              bool            `json:"use_cache"`
	TorchDtype            string          `json:"torch_dtype"`
	BOSTokenID            *int            `json:"bos_token_id"`
	EOSTokenID            *int            `json:"eos_token_id"`
}

// HFConfigJSON is the Hugging Face config.json of a Llama cfg, so that a
// folder holding it and a whole-model checkpoint (model.safetensors, the
// stage's StateDict) loads with LlamaForCausalLM.from_pretrained. bosID
// and eosID are the tokenizer's begin/end-of-text ids, or −1 for none
// (written as null; left out, Hugging Face would assume 1 and 2). A GPT-2
// is refused with ErrNoHFConfig: its tensors use nanoGPT's names and
// (out, in) Linear weights, which GPT2LMHeadModel's (in, out) Conv1D
// weights are not.
func HFConfigJSON(cfg Config, bosID, eosID int) ([]byte, error) {
	if cfg.Family != FamilyLlama {
		return nil, fmt.Errorf("model.family = %q: %w (only llama has one: a GPT-2 checkpoint uses nanoGPT's layout)", cfg.Family, ErrNoHFConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	id := func(v int) *int {
		if v < 0 {
			return nil
		}
		return &v
	}
	if bosID >= cfg.VocabSize || eosID >= cfg.VocabSize {
		return nil, fmt.Errorf("config.json: bos %d / eos %d not below vocab_size %d", bosID, eosID, cfg.VocabSize)
	}
	h := hfLlamaConfig{
		Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama",
		HiddenSize: cfg.NEmbd, IntermediateSize: cfg.IntermediateSize,
		NumAttentionHeads: cfg.NHead, NumKeyValueHeads: cfg.NKVHead, NumHiddenLayers: cfg.NLayer,
		HeadDim: cfg.HeadSize(), HiddenAct: "silu", RMSNormEps: cfg.RMSNormEps, RopeTheta: cfg.RopeTheta,
		RopeScaling: json.RawMessage("null"), MaxPositionEmbeddings: cfg.BlockSize, VocabSize: cfg.VocabSize,
		TieWordEmbeddings: cfg.Tied(), InitializerRange: 0.02, PretrainingTP: 1, UseCache: true,
		TorchDtype: "float32", BOSTokenID: id(bosID), EOSTokenID: id(eosID),
	}
	js, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	return append(js, '\n'), nil
}

// WriteHFConfig writes HFConfigJSON(cfg, bosID, eosID) to path (normally
// DIR/config.json next to DIR/model.safetensors), atomically.
func WriteHFConfig(path string, cfg Config, bosID, eosID int) error {
	js, err := HFConfigJSON(cfg, bosID, eosID)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return writeFileAtomic(path, js)
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ParseHFConfig reads a Hugging Face Llama config.json into a Config
// (block_size = max_position_embeddings), refusing, by key, what this
// engine does not run: another model_type or activation, biases, dropout,
// RoPE scaling, a head_dim other than hidden_size/num_attention_heads.
// A missing num_key_value_heads means num_attention_heads and a missing
// tie_word_embeddings untied, as in Hugging Face; a missing rms_norm_eps
// or rope_theta is an error (Hugging Face's defaults changed between
// versions).
func ParseHFConfig(js []byte) (Config, error) {
	var h hfLlamaConfig
	if err := json.Unmarshal(js, &h); err != nil {
		return Config{}, fmt.Errorf("config.json: %w", err)
	}
	var errs []error
	bad := func(cond bool, format string, a ...any) {
		if cond {
			errs = append(errs, fmt.Errorf("config.json: "+format, a...))
		}
	}
	bad(h.ModelType != "llama", "model_type %q: only \"llama\" is supported", h.ModelType)
	bad(h.HiddenAct != "" && h.HiddenAct != "silu", "hidden_act %q: only \"silu\" is supported", h.HiddenAct)
	bad(h.AttentionBias || h.MLPBias, "attention_bias / mlp_bias: biases are not supported")
	bad(h.AttentionDropout != 0, "attention_dropout %g: only 0 is supported", h.AttentionDropout)
	bad(len(h.RopeScaling) > 0 && string(h.RopeScaling) != "null", "rope_scaling %s: RoPE scaling is not supported", h.RopeScaling)
	bad(h.PretrainingTP > 1, "pretraining_tp %d: only 1 is supported", h.PretrainingTP)
	bad(h.RMSNormEps == 0, "rms_norm_eps missing: set it (Hugging Face's default has changed between versions)")
	bad(h.RopeTheta == 0, "rope_theta missing: set it (10000 for Llama 2)")
	if h.NumKeyValueHeads == 0 {
		h.NumKeyValueHeads = h.NumAttentionHeads
	}
	if h.NumAttentionHeads > 0 {
		bad(h.HeadDim != 0 && h.HeadDim*h.NumAttentionHeads != h.HiddenSize,
			"head_dim %d: only hidden_size / num_attention_heads = %d is supported", h.HeadDim, h.HiddenSize/h.NumAttentionHeads)
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	cfg := Config{Family: FamilyLlama, NLayer: h.NumHiddenLayers, NHead: h.NumAttentionHeads, NKVHead: h.NumKeyValueHeads,
		NEmbd: h.HiddenSize, BlockSize: h.MaxPositionEmbeddings, VocabSize: h.VocabSize, IntermediateSize: h.IntermediateSize,
		RopeTheta: h.RopeTheta, RMSNormEps: h.RMSNormEps, UntiedEmbeddings: !h.TieWordEmbeddings}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config.json: %w", err)
	}
	return cfg, nil
}

// HFModelFiles are the names WriteHFModel writes in its folder.
const (
	HFConfigFile  = "config.json"
	HFWeightsFile = "model.safetensors"
)

// WriteHFModel writes a whole-model Llama stage as a Hugging Face model
// folder: config.json (HFConfigJSON) and model.safetensors with
// LlamaForCausalLM's state_dict (lm_head.weight included, the embedding's
// values when tied, as PyTorch's state_dict lists it) and the metadata
// {"format": "pt"} that transformers' from_pretrained requires of a
// safetensors file. Token ids as in HFConfigJSON.
func WriteHFModel(dir string, s *Stage, bosID, eosID int) error {
	if !s.first || !s.last {
		return fmt.Errorf("write Hugging Face model: %w (merge the stages' checkpoints and load them into a whole model)", ErrNotWhole)
	}
	js, err := HFConfigJSON(s.cfg, bosID, eosID)
	if err != nil {
		return fmt.Errorf("write Hugging Face model: %w", err)
	}
	ts := make([]Tensor, 0, len(s.params)+1)
	for _, p := range s.params {
		ts = append(ts, Tensor{Name: p.Name, Shape: p.Shape, Data: p.Data})
	}
	if s.cfg.Tied() {
		ts = append(ts, Tensor{Name: lmHeadName, Shape: s.wte.Shape, Data: s.wte.Data})
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write Hugging Face model: %w", err)
	}
	if err := WriteSafetensors(filepath.Join(dir, HFWeightsFile), ts, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("write Hugging Face model: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, HFConfigFile), js)
}
