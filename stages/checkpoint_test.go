package stages

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
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
	dir := t.TempDir()
	path, statePath := filepath.Join(dir, "ckpt.safetensors"), filepath.Join(dir, "state.safetensors")
	st := &State{Model: cfg, Step: 1}
	st.AddStage(whole, opt, true)
	if err := WriteCheckpoint(path, st, map[string]string{"run": "t"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteState(statePath, st, nil); err != nil {
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
	back, _, err := ReadState(statePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.RestoreStage(again, opt2); err != nil {
		t.Fatal(err)
	}
	if opt2.StepCount() != 1 {
		t.Errorf("resumed step %d, want 1", opt2.StepCount())
	}
}

func TestCheckpointMismatchErrors(t *testing.T) {
	cfg := tinyConfig(true)
	whole, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	opt, _ := NewAdamW(whole.Params(), DefaultAdamWConfig())
	dir := t.TempDir()
	path := filepath.Join(dir, "c.safetensors")
	st := &State{Model: cfg}
	st.AddStage(whole, opt, true)
	if err := WriteCheckpoint(path, st, nil); err != nil {
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
	back, _, err := ReadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.RestoreStage(other, nil); err == nil || !strings.Contains(err.Error(), "NHead:2") {
		t.Errorf("n_head mismatch: error %v", err)
	}
	if err := back.RestoreStage(whole, opt); err == nil || !strings.Contains(err.Error(), "optim") {
		t.Errorf("loading optimizer state from a weights-only file: %v", err)
	}
}

// TestStateOfASplitIsTheWholeModel: the stages of a split, gathered into one
// State, write a checkpoint that loads into a whole model with the same
// weights; the tied LM head of the last stage is stored once.
func TestStateOfASplitIsTheWholeModel(t *testing.T) {
	cfg := tinyConfig(false)
	dir := t.TempDir()
	a, _ := NewStage(cfg, 0, 1, true, false, 1, 1)
	b, _ := NewStage(cfg, 1, 3, false, true, 1, 1)
	oa, _ := NewAdamW(a.Params(), DefaultAdamWConfig())
	ob, _ := NewAdamW(b.Params(), DefaultAdamWConfig())
	st := &State{Model: cfg, Step: 3}
	st.AddStage(a, oa, true)
	st.AddStage(b, ob, true)
	for _, x := range st.Tensors {
		if strings.HasSuffix(x.Name, lmHeadName) {
			t.Errorf("the state holds %s beside the tied embedding", x.Name)
		}
	}
	full := filepath.Join(dir, "full.safetensors")
	if err := WriteCheckpoint(full, st, map[string]string{"config": "x"}); err != nil {
		t.Fatal(err)
	}
	whole, err := LoadModel(full, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := NewStage(cfg, 0, 3, true, true, 1, 1) // DefaultSeed, as a and b
	for i, p := range whole.Params() {
		if !sameData(p.Data, ref.Params()[i].Data) {
			t.Errorf("%s differs after gathering and loading", p.Name)
		}
	}
	// And the other way: the whole state restores into each stage of
	// another split, the last stage's head from the tied embedding.
	c, _ := NewStage(cfg, 0, 2, true, false, 1, 1)
	d, _ := NewStage(cfg, 2, 3, false, true, 1, 1)
	for _, s := range []*Stage{c, d} {
		opt, _ := NewAdamW(s.Params(), DefaultAdamWConfig())
		if err := st.RestoreStage(s, opt); err != nil {
			t.Fatal(err)
		}
	}
	if !sameData(d.TiedWeight().Data, ref.TiedWeight().Data) {
		t.Error("the last stage's tied head did not come from the embedding")
	}
}

// TestCheckpointClaimingAHugeModelIsRefused: a small file whose metadata
// claims a model of 600 million parameters is refused before the model is
// allocated (it used to make eval allocate gigabytes), as the test's own
// reading of the heap shows.
func TestCheckpointClaimingAHugeModelIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "liar.safetensors")
	md := map[string]string{MetaModel: `{"n_layer":12,"n_head":16,"n_embd":2048,"block_size":1024,"vocab_size":256,"bias":true}`, MetaStep: "1"}
	if err := WriteSafetensors(path, []Tensor{{Name: wteName, Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}}}, md); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := LoadModel(path, 1)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrBadSafetensors) || !strings.Contains(err.Error(), "holds 4 values") {
		t.Fatalf("a %d-byte file claiming a 600-million-parameter model: %v", fi.Size(), err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("refusing it allocated %d MB", grew>>20)
	}
}

// TestCheckpointWithNaNIsRefused: weights that are not numbers (a run that
// diverged) are refused by name, instead of sampling garbage.
func TestCheckpointWithNaNIsRefused(t *testing.T) {
	cfg := tinyConfig(true)
	s, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	opt, _ := NewAdamW(s.Params(), DefaultAdamWConfig())
	s.Params()[3].Data[5] = float32(math.NaN())
	st := &State{Model: cfg}
	st.AddStage(s, opt, true)
	path := filepath.Join(t.TempDir(), "nan.safetensors")
	if err := WriteCheckpoint(path, st, nil); err != nil {
		t.Fatal(err)
	}
	_, err := LoadModel(path, 1)
	if !errors.Is(err, ErrNotFinite) || !strings.Contains(err.Error(), s.Params()[3].Name+"[5]") {
		t.Fatalf("a checkpoint with a NaN weight: %v", err)
	}
}
