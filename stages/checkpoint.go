package stages

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
)

// Metadata keys SaveStage writes.
const (
	MetaConfig    = "narrowband.config"     // the model Config as JSON
	MetaBlocks    = "narrowband.blocks"     // "lo,hi,first,last" of the stage saved
	MetaOptimStep = "narrowband.optim_step" // AdamW step count, when optimizer state is saved
)

// StateDict lists the stage's weights under nanoGPT's names as views (no
// copy). A whole-model stage also lists lm_head.weight, the same data as
// transformer.wte.weight, so that PyTorch's load_state_dict accepts the file
// as it is.
func (s *Stage) StateDict() []Tensor {
	ts := make([]Tensor, 0, len(s.params)+1)
	for _, p := range s.params {
		ts = append(ts, Tensor{Name: p.Name, Shape: p.Shape, Data: p.Data})
	}
	if s.first && s.last {
		ts = append(ts, Tensor{Name: lmHeadName, Shape: s.wte.Shape, Data: s.wte.Data})
	}
	return ts
}

// LoadStateDict copies weights into the stage by name. Tensors of the same
// model outside this stage's block range are ignored, so every stage can
// load its part from one full-model checkpoint; optim.* tensors are
// ignored. A tensor this model cannot have, a wrong shape, or a missing
// tensor is an error saying which config setting disagrees. The LM head of
// a last stage is read from lm_head.weight, or from transformer.wte.weight
// when the file has only that (they are tied).
func (s *Stage) LoadStateDict(ts []Tensor) error {
	full := map[string][]int{}
	for _, sp := range paramLayout(s.cfg, 0, s.cfg.NLayer, true, true) {
		full[sp.name] = sp.shape
	}
	full[lmHeadName] = []int{s.cfg.VocabSize, s.cfg.NEmbd}
	byName := make(map[string]Tensor, len(ts))
	for _, t := range ts {
		if strings.HasPrefix(t.Name, "optim.") {
			continue
		}
		want, ok := full[t.Name]
		if !ok {
			return fmt.Errorf("load weights: %w", s.unknownTensor(t.Name))
		}
		if !sameShape(t.Shape, want) || len(t.Data) != prod(want) {
			return fmt.Errorf("load weights: checkpoint's %s has shape %v but the config (n_embd=%d, vocab_size=%d, block_size=%d) needs %v",
				t.Name, t.Shape, s.cfg.NEmbd, s.cfg.VocabSize, s.cfg.BlockSize, want)
		}
		byName[t.Name] = t
	}
	for _, p := range s.params {
		t, ok := byName[p.Name]
		if !ok && p.Name == lmHeadName {
			t, ok = byName[wteName]
		}
		if !ok {
			return fmt.Errorf("load weights: checkpoint lacks %s (config has n_layer=%d, bias=%v): it was saved from another model or only another stage of it", p.Name, s.cfg.NLayer, s.cfg.Bias)
		}
		copy(p.Data, t.Data)
	}
	return nil
}

func (s *Stage) unknownTensor(name string) error {
	if rest, ok := strings.CutPrefix(name, "transformer.h."); ok {
		if i := strings.IndexByte(rest, '.'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil && n >= s.cfg.NLayer {
				return fmt.Errorf("checkpoint has transformer.h.%d.* but config has %d layers (n_layer = %d)", n, s.cfg.NLayer, s.cfg.NLayer)
			}
		}
	}
	if strings.HasSuffix(name, ".bias") && !s.cfg.Bias {
		return fmt.Errorf("checkpoint has %s but config has bias = false", name)
	}
	return fmt.Errorf("checkpoint has tensor %s, which a nanoGPT model with this config does not have", name)
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// SaveStage writes the stage's weights (and, if opt is not nil, its AdamW
// state as optim.m.* / optim.v.* tensors) to path atomically, with the
// model config and block range in the metadata next to the caller's.
func SaveStage(path string, s *Stage, opt *AdamW, metadata map[string]string) error {
	md := maps.Clone(metadata)
	if md == nil {
		md = map[string]string{}
	}
	cfg, err := json.Marshal(s.cfg)
	if err != nil {
		return fmt.Errorf("save stage: %w", err)
	}
	md[MetaConfig] = string(cfg)
	md[MetaBlocks] = fmt.Sprintf("%d,%d,%v,%v", s.lo, s.hi, s.first, s.last)
	ts := s.StateDict()
	if opt != nil {
		step, ots := opt.State()
		ts = append(ts, ots...)
		md[MetaOptimStep] = strconv.Itoa(step)
	}
	if err := WriteSafetensors(path, ts, md); err != nil {
		return fmt.Errorf("save stage: %w", err)
	}
	return nil
}

// LoadStage reads path into the stage (its part of the weights, see
// LoadStateDict) and, if opt is not nil, the optimizer state. A file whose
// metadata records another model config is refused, naming the field. It
// returns the file's metadata.
func LoadStage(path string, s *Stage, opt *AdamW) (map[string]string, error) {
	ts, md, err := ReadSafetensors(path)
	if err != nil {
		return nil, fmt.Errorf("load stage: %w", err)
	}
	if js, ok := md[MetaConfig]; ok {
		var c Config
		if err := json.Unmarshal([]byte(js), &c); err != nil {
			return nil, fmt.Errorf("load stage %s: metadata %s is not a config: %w", path, MetaConfig, err)
		}
		if c != s.cfg {
			return nil, fmt.Errorf("load stage %s: checkpoint was saved for model %+v, config is %+v: use the checkpoint's model settings", path, c, s.cfg)
		}
	}
	if err := s.LoadStateDict(ts); err != nil {
		return nil, fmt.Errorf("load stage %s: %w", path, err)
	}
	if opt != nil {
		step, err := strconv.Atoi(md[MetaOptimStep])
		if err != nil {
			return nil, fmt.Errorf("load stage %s: no optimizer state (metadata %s = %q): save with an optimizer or start it fresh", path, MetaOptimStep, md[MetaOptimStep])
		}
		if err := opt.LoadState(step, ts); err != nil {
			return nil, fmt.Errorf("load stage %s: %w", path, err)
		}
	}
	return md, nil
}

// MergeCheckpoints joins the weight files SaveStage wrote for the stages of
// one split model into a single full-model checkpoint at out, loadable by
// LoadStage into a whole model or any other split, and by PyTorch's
// load_state_dict (lm_head.weight is included). Optimizer state is left
// out. It fails, naming the tensor, if the inputs overlap with different
// values, disagree on the config, or do not cover the whole model.
func MergeCheckpoints(out string, in []string, metadata map[string]string) error {
	var cfg *Config
	merged := map[string]Tensor{}
	for _, path := range in {
		ts, md, err := ReadSafetensors(path)
		if err != nil {
			return fmt.Errorf("merge checkpoints: %w", err)
		}
		var c Config
		if err := json.Unmarshal([]byte(md[MetaConfig]), &c); err != nil {
			return fmt.Errorf("merge checkpoints: %s has no model config in its metadata (%s): was it written by SaveStage?", path, MetaConfig)
		}
		if cfg == nil {
			cfg = &c
		} else if c != *cfg {
			return fmt.Errorf("merge checkpoints: %s is for model %+v, %s for %+v", path, c, in[0], *cfg)
		}
		for _, t := range ts {
			if strings.HasPrefix(t.Name, "optim.") {
				continue
			}
			if prev, ok := merged[t.Name]; ok && !sameData(prev.Data, t.Data) {
				return fmt.Errorf("merge checkpoints: %s in %s differs from an earlier file: stages saved at different steps?", t.Name, path)
			}
			merged[t.Name] = t
		}
	}
	if cfg == nil {
		return fmt.Errorf("merge checkpoints: no input files")
	}
	if wte, ok := merged[wteName]; ok {
		if head, ok := merged[lmHeadName]; ok && !sameData(wte.Data, head.Data) {
			return fmt.Errorf("merge checkpoints: lm_head.weight differs from transformer.wte.weight: the tied copies were not kept in sync")
		}
		merged[lmHeadName] = Tensor{Name: lmHeadName, Shape: wte.Shape, Data: wte.Data}
	}
	var ts []Tensor
	for _, sp := range paramLayout(*cfg, 0, cfg.NLayer, true, true) {
		t, ok := merged[sp.name]
		if !ok {
			return fmt.Errorf("merge checkpoints: no input holds %s: list the files of every stage", sp.name)
		}
		ts = append(ts, t)
	}
	ts = append(ts, merged[lmHeadName])
	md := maps.Clone(metadata)
	if md == nil {
		md = map[string]string{}
	}
	js, _ := json.Marshal(*cfg)
	md[MetaConfig] = string(js)
	md[MetaBlocks] = fmt.Sprintf("0,%d,true,true", cfg.NLayer)
	if err := WriteSafetensors(out, ts, md); err != nil {
		return fmt.Errorf("merge checkpoints: %w", err)
	}
	return nil
}

func sameData(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
