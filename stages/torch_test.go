package stages

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

// TestTorchReference compares the engine with PyTorch: each testdata file
// (written by testdata/torch_reference.py from nanoGPT's model code) holds
// a tiny model's weights under nanoGPT names, a batch, and PyTorch's loss
// and gradients. Loading the file also proves a PyTorch state_dict loads
// here. Loss must agree to 1e-5 relative, every gradient entry to
// 1e-4·max|grad of its tensor| (float32 on both sides, different order of
// operations).
func TestTorchReference(t *testing.T) {
	for _, bias := range []string{"0", "1"} {
		path := filepath.Join("testdata", "torch_reference_bias"+bias+".safetensors")
		ts, md, err := ReadSafetensors(path)
		if err != nil {
			t.Fatalf("%v (regenerate with python3 testdata/torch_reference.py)", err)
		}
		var c struct {
			NLayer    int  `json:"n_layer"`
			NHead     int  `json:"n_head"`
			NEmbd     int  `json:"n_embd"`
			BlockSize int  `json:"block_size"`
			VocabSize int  `json:"vocab_size"`
			Bias      bool `json:"bias"`
		}
		if err := json.Unmarshal([]byte(md["config"]), &c); err != nil {
			t.Fatalf("%s: config metadata: %v", path, err)
		}
		cfg := Config{NLayer: c.NLayer, NHead: c.NHead, NEmbd: c.NEmbd, BlockSize: c.BlockSize, VocabSize: c.VocabSize, Bias: c.Bias}
		var weights []Tensor
		other := map[string]Tensor{}
		for _, x := range ts {
			if strings.HasPrefix(x.Name, "grad.") || strings.HasPrefix(x.Name, "test.") {
				other[x.Name] = x
			} else {
				weights = append(weights, x)
			}
		}
		tok := other["test.tokens"]
		B, T := tok.Shape[0], tok.Shape[1]
		s, err := NewStage(cfg, 0, cfg.NLayer, true, true, B, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.LoadStateDict(weights); err != nil {
			t.Fatalf("%s: PyTorch state_dict does not load: %v", path, err)
		}
		toInt := func(v []float32) []int32 {
			o := make([]int32, len(v))
			for i, x := range v {
				o[i] = int32(x)
			}
			return o
		}
		loss, err := s.ForwardLoss(0, B, T, toInt(tok.Data), nil, toInt(other["test.targets"].Data))
		if err != nil {
			t.Fatal(err)
		}
		want := other["test.loss"].Data[0]
		rel := math.Abs(float64(loss-want)) / float64(want)
		t.Logf("%s: loss %v, PyTorch %v (relative difference %.2g)", filepath.Base(path), loss, want, rel)
		if rel > 1e-5 {
			t.Errorf("%s: loss %v, PyTorch %v", path, loss, want)
		}
		if _, err := s.Backward(0, nil, 1); err != nil {
			t.Fatal(err)
		}
		for _, p := range s.Params() {
			ref, ok := other["grad."+p.Name]
			if !ok {
				t.Fatalf("%s: no PyTorch gradient for %s", path, p.Name)
			}
			tol := 1e-4 * maxAbs(ref.Data)
			worst := 0.0
			for i, g := range p.Grad {
				worst = math.Max(worst, math.Abs(float64(g-ref.Data[i])))
			}
			t.Logf("%s: %s max |Δgrad| %.3g (tolerance %.3g)", filepath.Base(path), p.Name, worst, tol)
			if worst > tol {
				t.Errorf("%s: %s gradient differs from PyTorch by up to %g (tolerance %g)", path, p.Name, worst, tol)
			}
		}
	}
}

// TestTorchReferenceLlama compares the Llama family with PyTorch running
// Hugging Face's modeling_llama.py conventions (testdata/torch_reference.py;
// the files' config metadata is the model's config.json, read with
// ParseHFConfig, and their tensors are LlamaForCausalLM's state_dict).
// Loss must agree to 1e-5 relative and every gradient entry of every
// parameter to 1e-4·max|grad of its tensor|, the GPT test's tolerances.
func TestTorchReferenceLlama(t *testing.T) {
	for _, name := range []string{"gqa_tied", "mha_untied"} {
		path := filepath.Join("testdata", "torch_reference_llama_"+name+".safetensors")
		ts, md, err := ReadSafetensors(path)
		if err != nil {
			t.Fatalf("%v (regenerate with python3 testdata/torch_reference.py)", err)
		}
		cfg, err := ParseHFConfig([]byte(md["config"]))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var weights []Tensor
		other := map[string]Tensor{}
		for _, x := range ts {
			if strings.HasPrefix(x.Name, "grad.") || strings.HasPrefix(x.Name, "test.") {
				other[x.Name] = x
			} else {
				weights = append(weights, x)
			}
		}
		tok := other["test.tokens"]
		B, T := tok.Shape[0], tok.Shape[1]
		s, err := NewStage(cfg, 0, cfg.NLayer, true, true, B, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.LoadStateDict(weights); err != nil {
			t.Fatalf("%s: the LlamaForCausalLM state_dict does not load: %v", path, err)
		}
		toInt := func(v []float32) []int32 {
			o := make([]int32, len(v))
			for i, x := range v {
				o[i] = int32(x)
			}
			return o
		}
		loss, err := s.ForwardLoss(0, B, T, toInt(tok.Data), nil, toInt(other["test.targets"].Data))
		if err != nil {
			t.Fatal(err)
		}
		want := other["test.loss"].Data[0]
		rel := math.Abs(float64(loss-want)) / float64(want)
		t.Logf("%s: loss %v, PyTorch %v (relative difference %.2g)", name, loss, want, rel)
		if rel > 1e-5 {
			t.Errorf("%s: loss %v, PyTorch %v", path, loss, want)
		}
		if _, err := s.Backward(0, nil, 1); err != nil {
			t.Fatal(err)
		}
		worstRel := 0.0
		for _, p := range s.Params() {
			ref, ok := other["grad."+p.Name]
			if !ok {
				t.Fatalf("%s: no PyTorch gradient for %s", path, p.Name)
			}
			scale := maxAbs(ref.Data)
			worst := 0.0
			for i, g := range p.Grad {
				worst = math.Max(worst, math.Abs(float64(g-ref.Data[i])))
			}
			worstRel = math.Max(worstRel, worst/scale)
			if worst > 1e-4*scale {
				t.Errorf("%s: %s gradient differs from PyTorch by up to %g (tolerance %g)", path, p.Name, worst, 1e-4*scale)
			}
		}
		t.Logf("%s: %d gradient tensors, worst max|Δgrad| / max|grad| %.2g", name, len(s.Params()), worstRel)
	}
}
