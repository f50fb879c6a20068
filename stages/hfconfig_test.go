package stages

import (
	"encoding/json"
	"errors"
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
