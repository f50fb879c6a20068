package stages

import (
	"path/filepath"
	"testing"
)

// A Llama's StateDict is LlamaForCausalLM's state_dict (a tied whole model
// lists lm_head.weight too, as PyTorch does), and SaveStage/LoadStage and
// MergeCheckpoints carry Llama stages as they carry GPT ones.
func TestLlamaCheckpoint(t *testing.T) {
	cfg := tinyLlama(false)
	whole, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	perturb(whole, 3)
	names := map[string]bool{}
	for _, x := range whole.StateDict() {
		names[x.Name] = true
	}
	if len(names) != len(whole.Params())+1 || !names[lmHeadName] || !names[llamaEmbedName] {
		t.Errorf("tied whole-model state dict %v", names)
	}
	dir := t.TempDir()
	a, _ := NewStage(cfg, 0, 2, true, false, 1, 1)
	b, _ := NewStage(cfg, 2, 3, false, true, 1, 1)
	for _, s := range []*Stage{a, b} {
		if err := s.LoadStateDict(whole.StateDict()); err != nil {
			t.Fatalf("a stage does not load the whole model's state dict: %v", err)
		}
	}
	oa, _ := NewAdamW(a.Params(), DefaultAdamWConfig())
	ob, _ := NewAdamW(b.Params(), DefaultAdamWConfig())
	st := &State{Model: cfg, Step: 1}
	st.AddStage(a, oa, cfg.Tied())
	st.AddStage(b, ob, cfg.Tied())
	merged := filepath.Join(dir, "model.safetensors")
	if err := WriteCheckpoint(merged, st, nil); err != nil {
		t.Fatal(err)
	}
	back, err := LoadModel(merged, 1)
	if err != nil {
		t.Fatalf("the gathered Llama checkpoint does not load: %v", err)
	}
	if back.Config() != cfg {
		t.Errorf("the checkpoint's metadata gives %+v, saved %+v", back.Config(), cfg)
	}
	for i, p := range back.Params() {
		for k, v := range p.Data {
			if v != whole.Params()[i].Data[k] {
				t.Fatalf("%s[%d] = %v after save, split and gather; was %v", p.Name, k, v, whole.Params()[i].Data[k])
			}
		}
	}
	other := cfg
	other.RopeTheta = 500000
	o, _ := NewStage(other, 0, 3, true, true, 1, 1)
	if err := st.RestoreStage(o, nil); err == nil {
		t.Error("a state of rope_theta 10000 restored into a model of rope_theta 500000")
	}
}

// An untied whole Llama holds lm_head.weight as a parameter of its own:
// the state dict lists it once, and a checkpoint of it loads back.
func TestLlamaUntiedStateDict(t *testing.T) {
	cfg := tinyLlama(true)
	s, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	seen := map[string]int{}
	for _, x := range s.StateDict() {
		seen[x.Name]++
	}
	if seen[lmHeadName] != 1 || len(seen) != len(s.Params()) {
		t.Errorf("untied state dict %v", seen)
	}
	opt, _ := NewAdamW(s.Params(), DefaultAdamWConfig())
	st := &State{Model: cfg}
	st.AddStage(s, opt, cfg.Tied())
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := WriteCheckpoint(path, st, nil); err != nil {
		t.Fatal(err)
	}
	back, err := LoadModel(path, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !sameData(back.Param(lmHeadName).Data, s.Param(lmHeadName).Data) {
		t.Error("the untied head did not come back")
	}
}
