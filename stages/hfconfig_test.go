package stages

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// HFConfigJSON writes, key for key, the config.json the PyTorch reference
// files were made from (the torch script's llama_config, Hugging Face's
// LlamaConfig keys), and ParseHFConfig reads it back to the same Config.
func TestHFConfigMatchesReference(t *testing.T) {
	for _, name := range []string{"gqa_tied", "mha_untied"} {
		_, md, err := ReadSafetensors(filepath.Join("testdata", "torch_reference_llama_"+name+".safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := ParseHFConfig([]byte(md["config"]))
		if err != nil {
			t.Fatal(err)
		}
		js, err := HFConfigJSON(cfg, -1, -1)
		if err != nil {
			t.Fatal(err)
		}
		var ours, ref map[string]any
		if err := json.Unmarshal(js, &ours); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal([]byte(md["config"]), &ref)
		for k, v := range ref {
			if !reflect.DeepEqual(ours[k], v) {
				t.Errorf("%s: %s = %v, reference %v", name, k, ours[k], v)
			}
		}
		for k := range ours {
			if _, ok := ref[k]; !ok && k != "use_cache" {
				t.Errorf("%s: we write %s, which the reference config lacks", name, k)
			}
		}
		back, err := ParseHFConfig(js)
		if err != nil || back != cfg {
			t.Errorf("%s: round trip %+v, %v; want %+v", name, back, err, cfg)
		}
	}
}

func TestHFConfig(t *testing.T) {
	cfg := DefaultLlamaConfig()
	cfg.NKVHead, cfg.UntiedEmbeddings, cfg.VocabSize = 2, true, 4096
	path := filepath.Join(t.TempDir(), "config.json")
	if err := WriteHFConfig(path, cfg, 4095, 4095); err != nil {
		t.Fatal(err)
	}
	js, _ := os.ReadFile(path)
	for _, want := range []string{`"architectures": [` + "\n" + `    "LlamaForCausalLM"`, `"model_type": "llama"`,
		`"num_key_value_heads": 2`, `"intermediate_size": 688`, `"tie_word_embeddings": false`, `"torch_dtype": "float32"`,
		`"bos_token_id": 4095`, `"eos_token_id": 4095`, `"rope_theta": 10000`, `"rms_norm_eps": 0.00001`, `"max_position_embeddings": 128`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("config.json lacks %s:\n%s", want, js)
		}
	}
	if got, err := ParseHFConfig(js); err != nil || got != cfg {
		t.Errorf("parse back: %+v, %v", got, err)
	}
	if js, _ := HFConfigJSON(DefaultLlamaConfig(), -1, -1); !strings.Contains(string(js), `"bos_token_id": null`) {
		t.Errorf("no bos id must be null (Hugging Face would assume 1): %s", js)
	}
	if _, err := HFConfigJSON(DefaultConfig(), -1, -1); !errors.Is(err, ErrNoHFConfig) {
		t.Errorf("GPT-2: %v, want ErrNoHFConfig", err)
	}
	if _, err := HFConfigJSON(cfg, 4096, -1); err == nil {
		t.Error("bos id past the vocabulary accepted")
	}
	for _, bad := range []struct{ edit, want string }{
		{`"model_type": "mistral"`, "model_type"},
		{`"rope_scaling": {"type": "linear", "factor": 2}`, "rope_scaling"},
		{`"attention_bias": true`, "biases"},
		{`"hidden_act": "gelu"`, "hidden_act"},
		{`"head_dim": 128`, "head_dim"},
	} {
		var m map[string]json.RawMessage
		json.Unmarshal(js, &m)
		k, v, _ := strings.Cut(bad.edit, ": ")
		m[strings.Trim(k, `"`)] = json.RawMessage(v)
		edited, _ := json.Marshal(m)
		if _, err := ParseHFConfig(edited); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v", bad.edit, err)
		}
	}
}

// WriteHFModel's folder is what from_pretrained reads: config.json, and
// model.safetensors with format "pt" and exactly LlamaForCausalLM's
// state_dict, which loads back into an equal model. With
// NARROWBAND_HF_EXPORT=DIR it also leaves DIR/{tied,untied} for
// testdata/torch_reference.py --check-export to load into PyTorch.
func TestWriteHFModel(t *testing.T) {
	for _, untied := range []bool{false, true} {
		cfg := tinyLlama(untied)
		s, _ := NewStage(cfg, 0, cfg.NLayer, true, true, 2, 1)
		perturb(s, 7)
		dir := t.TempDir()
		if d := os.Getenv("NARROWBAND_HF_EXPORT"); d != "" {
			dir = filepath.Join(d, map[bool]string{false: "tied", true: "untied"}[untied])
		}
		if err := WriteHFModel(dir, s, -1, -1); err != nil {
			t.Fatal(err)
		}
		ts, md, err := ReadSafetensors(filepath.Join(dir, HFWeightsFile))
		if err != nil {
			t.Fatal(err)
		}
		if md["format"] != "pt" {
			t.Errorf("metadata %v lacks format=pt", md)
		}
		names := map[string]bool{}
		for _, x := range ts {
			names[x.Name] = true
		}
		want := len(s.Params())
		if !untied {
			want++ // lm_head.weight, tied
		}
		if len(names) != want || !names[lmHeadName] || !names[llamaEmbedName] || !names["model.layers.2.mlp.down_proj.weight"] {
			t.Errorf("untied=%v: tensors %v", untied, names)
		}
		js, _ := os.ReadFile(filepath.Join(dir, HFConfigFile))
		back, err := ParseHFConfig(js)
		if err != nil || back != cfg {
			t.Fatalf("config.json reads back as %+v, %v", back, err)
		}
		s2, _ := NewStage(back, 0, back.NLayer, true, true, 2, 1)
		if err := s2.LoadStateDict(ts); err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, 1))
		tok, tgt := randTokens(r, 12, cfg.VocabSize), randTokens(r, 12, cfg.VocabSize)
		l1, _ := s.ForwardLoss(0, 2, 6, tok, nil, tgt)
		l2, _ := s2.ForwardLoss(0, 2, 6, tok, nil, tgt)
		if l1 != l2 {
			t.Errorf("untied=%v: loss %v after export and load, %v before", untied, l2, l1)
		}
		if os.Getenv("NARROWBAND_HF_EXPORT") != "" {
			check, _ := json.Marshal(map[string]any{"B": 2, "T": 6, "tokens": tok, "targets": tgt, "loss": l1})
			os.WriteFile(filepath.Join(dir, "check.json"), check, 0o644)
		}
	}
	half, _ := NewStage(tinyLlama(false), 0, 1, true, false, 1, 1)
	if err := WriteHFModel(t.TempDir(), half, -1, -1); !errors.Is(err, ErrNotWhole) {
		t.Errorf("a first stage exported: %v", err)
	}
}
