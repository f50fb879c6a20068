package stages

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckpointWholeToSplit(t *testing.T) {
	cfg := tinyConfig(true)
	whole, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	whole.Init(42)
	opt, _ := NewAdamW(whole.Params(), DefaultAdamWConfig())
	for _, p := range whole.Params() {
		for i := range p.Grad {
			p.Grad[i] = 0.01
		}
	}
	opt.Step(1e-3)
	path := filepath.Join(t.TempDir(), "ckpt.safetensors")
	if err := SaveStage(path, whole, opt, map[string]string{"run": "t"}); err != nil {
		t.Fatal(err)
	}
	ts, md, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, x := range ts {
		names[x.Name] = true
	}
	if !names[lmHeadName] || !names["transformer.h.2.mlp.c_proj.bias"] || md["run"] != "t" {
		t.Errorf("full checkpoint lacks lm_head.weight, a block tensor or the caller's metadata: %v", md)
	}
	// Each stage of a split loads its part of the full checkpoint.
	a, _ := NewStage(cfg, 0, 1, true, false, 1, 1)
	b, _ := NewStage(cfg, 1, 3, false, true, 1, 1)
	for _, s := range []*Stage{a, b} {
		if err := s.LoadStateDict(ts); err != nil {
			t.Fatal(err)
		}
	}
	w := map[string][]float32{}
	for _, p := range whole.Params() {
		w[p.Name] = p.Data
	}
	w[lmHeadName] = w[wteName]
	for _, s := range []*Stage{a, b} {
		for _, p := range s.Params() {
			for i := range p.Data {
				if p.Data[i] != w[p.Name][i] {
					t.Fatalf("%s[%d] = %v after load, saved %v", p.Name, i, p.Data[i], w[p.Name][i])
				}
			}
		}
	}
	// Full resume: weights and optimizer state.
	again, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	opt2, _ := NewAdamW(again.Params(), DefaultAdamWConfig())
	if _, err := LoadStage(path, again, opt2); err != nil {
		t.Fatal(err)
	}
	if opt2.StepCount() != 1 {
		t.Errorf("resumed step %d, want 1", opt2.StepCount())
	}
}

func TestCheckpointMismatchErrors(t *testing.T) {
	cfg := tinyConfig(true)
	whole, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "c.safetensors")
	if err := SaveStage(path, whole, nil, nil); err != nil {
		t.Fatal(err)
	}
	ts, _, _ := ReadSafetensors(path)
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"fewer layers", Config{NLayer: 2, NHead: 2, NEmbd: 8, BlockSize: 6, VocabSize: 11, Bias: true}, "transformer.h.2.* but config has 2 layers"},
		{"no bias", Config{NLayer: 3, NHead: 2, NEmbd: 8, BlockSize: 6, VocabSize: 11}, "bias = false"},
		{"wider", Config{NLayer: 3, NHead: 2, NEmbd: 16, BlockSize: 6, VocabSize: 11, Bias: true}, "shape"},
		{"more layers", Config{NLayer: 4, NHead: 2, NEmbd: 8, BlockSize: 6, VocabSize: 11, Bias: true}, "lacks transformer.h.3"},
	}
	for _, c := range cases {
		s, err := NewStage(c.cfg, 0, c.cfg.NLayer, true, true, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.LoadStateDict(ts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	// A head count change is invisible in shapes; the saved config catches it.
	other, _ := NewStage(Config{NLayer: 3, NHead: 4, NEmbd: 8, BlockSize: 6, VocabSize: 11, Bias: true}, 0, 3, true, true, 1, 1)
	if _, err := LoadStage(path, other, nil); err == nil || !strings.Contains(err.Error(), "NHead:2") {
		t.Errorf("n_head mismatch: error %v", err)
	}
	if _, err := LoadStage(path, whole, &AdamW{}); err == nil || !strings.Contains(err.Error(), "optimizer") {
		t.Errorf("loading optimizer state from a weights-only file: %v", err)
	}
}

func TestMergeCheckpoints(t *testing.T) {
	cfg := tinyConfig(false)
	dir := t.TempDir()
	a, _ := NewStage(cfg, 0, 1, true, false, 1, 1)
	b, _ := NewStage(cfg, 1, 3, false, true, 1, 1)
	pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	SaveStage(pa, a, nil, nil)
	SaveStage(pb, b, nil, nil)
	full := filepath.Join(dir, "full.safetensors")
	if err := MergeCheckpoints(full, []string{pa, pb}, map[string]string{"step": "3"}); err != nil {
		t.Fatal(err)
	}
	whole, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	whole.Init(7) // different weights, overwritten by the load
	if _, err := LoadStage(full, whole, nil); err != nil {
		t.Fatal(err)
	}
	ref, _ := NewStage(cfg, 0, 3, true, true, 1, 1) // DefaultSeed, as a and b
	for i, p := range whole.Params() {
		if !sameData(p.Data, ref.Params()[i].Data) {
			t.Errorf("%s differs after merge and load", p.Name)
		}
	}
	if err := MergeCheckpoints(full, []string{pa}, nil); err == nil || !strings.Contains(err.Error(), "transformer.h.1") {
		t.Errorf("merging only the first stage: %v", err)
	}
	b.TiedWeight().Data[0] += 1
	SaveStage(pb, b, nil, nil)
	if err := MergeCheckpoints(full, []string{pa, pb}, nil); err == nil || !strings.Contains(err.Error(), "tied") {
		t.Errorf("merging out-of-sync tied copies: %v", err)
	}
}
