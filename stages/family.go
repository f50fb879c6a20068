package stages

import "fmt"

// Family is the model architecture a Config describes.
//
// The zero value is FamilyGPT2: every config and checkpoint written before
// families existed describes nanoGPT's GPT-2, and must keep meaning it (a
// checkpoint's JSON config without a family decodes to the same Config it
// was saved from). There is no separate "unknown": a family name that is
// not one of these is an error when it is decoded.
type Family int

const (
	// FamilyGPT2 is nanoGPT's GPT-2: LayerNorm, learned position
	// embeddings, GELU MLP of width 4·n_embd, multi-head attention, tied
	// LM head, optional biases. Tensor names are nanoGPT's.
	FamilyGPT2 Family = iota
	// FamilyLlama is Hugging Face's LlamaForCausalLM: RMSNorm, rotary
	// position embeddings (rotate_half convention), SwiGLU MLP of width
	// intermediate_size, grouped-query attention (n_kv_head), no biases,
	// tied or untied LM head. Tensor names are Hugging Face's.
	FamilyLlama
)

var familyNames = [...]string{FamilyGPT2: "gpt2", FamilyLlama: "llama"}

// String is the family's config name ("gpt2", "llama").
func (f Family) String() string {
	if f >= 0 && int(f) < len(familyNames) {
		return familyNames[f]
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

// MarshalText writes the config name, so TOML and JSON hold "llama", not 1.
func (f Family) MarshalText() ([]byte, error) {
	if f < 0 || int(f) >= len(familyNames) {
		return nil, fmt.Errorf("model.family = %d: not a known family", int(f))
	}
	return []byte(familyNames[f]), nil
}

// UnmarshalText reads a config name; the empty string is GPT-2, the
// default.
func (f *Family) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "" {
		*f = FamilyGPT2
		return nil
	}
	for i, n := range familyNames {
		if s == n {
			*f = Family(i)
			return nil
		}
	}
	return fmt.Errorf("model.family = %q: want %q or %q", s, familyNames[FamilyGPT2], familyNames[FamilyLlama])
}
