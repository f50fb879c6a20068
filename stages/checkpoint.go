package stages

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
)

// Metadata keys of the two files a run writes (see WriteState and
// WriteCheckpoint). Callers add their own keys (a run adds its resolved
// config as "config").
const (
	MetaModel     = "model"                 // nanoGPT GPTConfig fields as JSON
	MetaStep      = "step"                  // optimizer steps done
	MetaWall      = "wall_seconds"          // wall-clock time of the run so far (state file)
	MetaOptimStep = "narrowband.optim_step" // AdamW step count (state file)
)

// StateDict lists the stage's weights under nanoGPT's (GPT) or Hugging
// Face's (Llama) names as views (no copy). A tied whole-model stage also
// lists lm_head.weight, the same data as the token embedding, so that
// PyTorch's load_state_dict accepts the file as it is.
func (s *Stage) StateDict() []Tensor {
	ts := make([]Tensor, 0, len(s.params)+1)
	for _, p := range s.params {
		ts = append(ts, Tensor{Name: p.Name, Shape: p.Shape, Data: p.Data})
	}
	if s.first && s.last && s.cfg.Tied() {
		ts = append(ts, Tensor{Name: lmHeadName, Shape: s.wte.Shape, Data: s.wte.Data})
	}
	return ts
}

// embedName is the token embedding's tensor name in cfg's family.
func embedName(cfg Config) string {
	if cfg.Family == FamilyLlama {
		return llamaEmbedName
	}
	return wteName
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
		if !ok && p.Name == lmHeadName && s.cfg.Tied() {
			t, ok = byName[embedName(s.cfg)]
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

// State is a whole model with its optimizer state, gathered from the stages
// of whatever split trained it: weights under nanoGPT's names (the tied
// embedding once, as transformer.wte.weight, unless the LM head is untied)
// and AdamW moments as optim.m.<name> / optim.v.<name>. It is what a run's
// train_state.safetensors holds, and any split of the same model can load
// it (RestoreStage).
type State struct {
	Model       Config
	Step        int // the run's optimizer steps done
	OptimStep   int // AdamW's own step count
	WallSeconds float64
	Tensors     []Tensor
}

// AddStage copies one stage's weights and moments into the state. With a
// tied head, a last stage's lm_head.weight (and its moments) is left out:
// it equals transformer.wte.weight, which the first stage adds.
func (s *State) AddStage(st *Stage, opt *AdamW, tiedHead bool) {
	step, ts := opt.State()
	s.AddTensors(append(st.StateDict(), ts...), step, tiedHead)
}

// AddTensors adds a stage's weights and moments as it sent them (copied),
// with its optimizer's step count; see AddStage.
func (s *State) AddTensors(ts []Tensor, optimStep int, tiedHead bool) {
	s.OptimStep = optimStep
	for _, t := range ts {
		if tiedHead && strings.HasSuffix(t.Name, lmHeadName) {
			continue
		}
		s.Tensors = append(s.Tensors, Tensor{Name: t.Name, Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Data...)})
	}
}

// RestoreStage loads the state into one stage of any split of the same
// model: its weights and, if opt is not nil, its optimizer state.
func (s *State) RestoreStage(st *Stage, opt *AdamW) error {
	if s.Model != st.Config() {
		return fmt.Errorf("restore: the state holds a model %+v but the stage is of %+v; use the model settings it was saved with", s.Model, st.Config())
	}
	ts := s.Tensors
	if _, _, first, last := st.Range(); last && !first && !s.hasHead() && s.Model.Tied() {
		// The LM head and its moments are the tied embedding's.
		emb := embedName(s.Model)
		for _, t := range s.Tensors {
			if strings.HasSuffix(t.Name, emb) {
				ts = append(ts, Tensor{Name: strings.Replace(t.Name, emb, lmHeadName, 1), Shape: t.Shape, Data: t.Data})
			}
		}
	}
	if err := st.LoadStateDict(ts); err != nil {
		return err
	}
	if opt == nil {
		return nil
	}
	return opt.LoadState(s.OptimStep, ts)
}

func (s *State) hasHead() bool {
	for _, t := range s.Tensors {
		if t.Name == lmHeadName {
			return true
		}
	}
	return false
}

// Weights are the state's weights as a PyTorch nanoGPT state_dict holds
// them: no optimizer moments, and lm_head.weight present (the tied
// embedding's data when the head is tied).
func (s *State) Weights() []Tensor {
	var out []Tensor
	head := s.hasHead()
	for _, t := range s.Tensors {
		if strings.HasPrefix(t.Name, "optim.") {
			continue
		}
		out = append(out, t)
		if t.Name == embedName(s.Model) && !head && s.Model.Tied() {
			out = append(out, Tensor{Name: lmHeadName, Shape: t.Shape, Data: t.Data})
		}
	}
	return out
}

// WriteState writes what resuming needs (weights, moments, steps, wall
// time) to path atomically, with the caller's metadata beside the keys
// above.
func WriteState(path string, s *State, metadata map[string]string) error {
	md := stateMetadata(s, metadata)
	md[MetaWall] = strconv.FormatFloat(s.WallSeconds, 'g', -1, 64)
	md[MetaOptimStep] = strconv.Itoa(s.OptimStep)
	return WriteSafetensors(path, s.Tensors, md)
}

// WriteCheckpoint writes the model's weights only (Weights), under
// nanoGPT's names, so a PyTorch user can load the file as it is.
func WriteCheckpoint(path string, s *State, metadata map[string]string) error {
	return WriteSafetensors(path, s.Weights(), stateMetadata(s, metadata))
}

func stateMetadata(s *State, metadata map[string]string) map[string]string {
	md := maps.Clone(metadata)
	if md == nil {
		md = map[string]string{}
	}
	md[MetaModel] = nanoGPTConfig(s.Model)
	md[MetaStep] = strconv.Itoa(s.Step)
	return md
}

// nanoGPTConfig is the model's shape under GPTConfig's field names, for the
// metadata; a Llama adds its family and fields under their TOML names.
func nanoGPTConfig(m Config) string {
	f := map[string]any{
		"n_layer": m.NLayer, "n_head": m.NHead, "n_embd": m.NEmbd,
		"block_size": m.BlockSize, "vocab_size": m.VocabSize, "bias": m.Bias,
	}
	if m.Family == FamilyLlama {
		f["family"], f["n_kv_head"], f["intermediate_size"] = m.Family.String(), m.NKVHead, m.IntermediateSize
		f["rope_theta"], f["rms_norm_eps"], f["untied_embeddings"] = m.RopeTheta, m.RMSNormEps, m.UntiedEmbeddings
	}
	b, _ := json.Marshal(f)
	return string(b)
}

// ReadState reads a file WriteState (or, without optimizer state,
// WriteCheckpoint) wrote, and returns its metadata too.
func ReadState(path string) (*State, map[string]string, error) {
	ts, md, err := ReadSafetensors(path)
	if err != nil {
		return nil, nil, err
	}
	m, err := ModelFromMetadata(md)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	st := &State{Model: m, Tensors: ts}
	if st.Step, err = strconv.Atoi(md[MetaStep]); err != nil {
		return nil, nil, fmt.Errorf("%s: metadata %q = %q is not a step number; is this a narrowband run's state or checkpoint file?", path, MetaStep, md[MetaStep])
	}
	if v, ok := md[MetaOptimStep]; ok {
		if st.OptimStep, err = strconv.Atoi(v); err != nil {
			return nil, nil, fmt.Errorf("%s: metadata %q = %q is not a number", path, MetaOptimStep, v)
		}
	}
	st.WallSeconds, _ = strconv.ParseFloat(md[MetaWall], 64)
	return st, md, nil
}

// ModelFromMetadata reads the model shape a file was saved with.
func ModelFromMetadata(md map[string]string) (Config, error) {
	js, ok := md[MetaModel]
	if !ok {
		return Config{}, fmt.Errorf("no %q entry in the safetensors metadata: not a narrowband checkpoint (it needs the model's shape)", MetaModel)
	}
	var g struct {
		NLayer           int     `json:"n_layer"`
		NHead            int     `json:"n_head"`
		NEmbd            int     `json:"n_embd"`
		BlockSize        int     `json:"block_size"`
		VocabSize        int     `json:"vocab_size"`
		Bias             bool    `json:"bias"`
		Family           Family  `json:"family"`
		NKVHead          int     `json:"n_kv_head"`
		IntermediateSize int     `json:"intermediate_size"`
		RopeTheta        float64 `json:"rope_theta"`
		RMSNormEps       float64 `json:"rms_norm_eps"`
		UntiedEmbeddings bool    `json:"untied_embeddings"`
	}
	if err := json.Unmarshal([]byte(js), &g); err != nil {
		return Config{}, fmt.Errorf("metadata %q is not valid JSON: %v", MetaModel, err)
	}
	m := Config{NLayer: g.NLayer, NHead: g.NHead, NEmbd: g.NEmbd, BlockSize: g.BlockSize, VocabSize: g.VocabSize, Bias: g.Bias,
		Family: g.Family, NKVHead: g.NKVHead, IntermediateSize: g.IntermediateSize, RopeTheta: g.RopeTheta, RMSNormEps: g.RMSNormEps, UntiedEmbeddings: g.UntiedEmbeddings}
	if err := m.Validate(); err != nil {
		return Config{}, fmt.Errorf("metadata %q: %w", MetaModel, err)
	}
	return m, nil
}

// LoadModel reads a checkpoint (or state file) into a whole-model stage for
// evaluation or sampling, with room for batches of maxB sequences.
func LoadModel(path string, maxB int) (*Stage, error) {
	ts, md, err := ReadSafetensors(path)
	if err != nil {
		return nil, err
	}
	m, err := ModelFromMetadata(md)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// The metadata's claim is checked against what the file holds before
	// a model of that size is allocated: a small file claiming a large
	// model is refused, not believed.
	var have int64
	for _, t := range ts {
		if !strings.HasPrefix(t.Name, "optim.") && (t.Name != lmHeadName || !m.Tied()) {
			have += int64(len(t.Data))
		}
	}
	if need := StageParams(m, 0, m.NLayer, true, true); have < need {
		return nil, fmt.Errorf("%s: %w: its metadata describes a model of %d parameters (%+v) but the file holds %d values; the file is truncated or its metadata is wrong", path, ErrBadSafetensors, need, m, have)
	}
	if err := finite(ts); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	st, err := NewStage(m, 0, m.NLayer, true, true, maxB, 1)
	if err != nil {
		return nil, err
	}
	if err := st.LoadStateDict(ts); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// ErrNotFinite is a checkpoint holding NaN or infinite weights: the run
// diverged before it was saved.
var ErrNotFinite = errors.New("the weights are not all finite numbers")

// finite checks every weight (not the optimizer moments).
func finite(ts []Tensor) error {
	for _, t := range ts {
		if strings.HasPrefix(t.Name, "optim.") {
			continue
		}
		for i, v := range t.Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("%w: %s[%d] = %v; the run diverged before this was saved: use an earlier checkpoint, and lower train.learning_rate", ErrNotFinite, t.Name, i, v)
			}
		}
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

// StageParams is the number of parameters a stage of blocks [lo, hi) of cfg
// holds (with the embeddings if first, ln_f and the head if last), without
// allocating it.
func StageParams(cfg Config, lo, hi int, first, last bool) int64 {
	var n int64
	for _, k := range StageParamSizes(cfg, lo, hi, first, last) {
		n += k
	}
	return n
}

// ParamShape is a parameter tensor's name and shape.
type ParamShape struct {
	Name  string
	Shape []int
}

// StageParamShapes is the name and shape of each parameter tensor of that
// stage, in the order of Stage.Params, without allocating it.
func StageParamShapes(cfg Config, lo, hi int, first, last bool) []ParamShape {
	var out []ParamShape
	for _, sp := range paramLayout(cfg, lo, hi, first, last) {
		out = append(out, ParamShape{Name: sp.name, Shape: sp.shape})
	}
	return out
}

// StageParamSizes is the length of each parameter tensor of that stage, in
// the order of Stage.Params, without allocating it: what a transfer that
// cuts every tensor into frames of its own (the gradient sum among
// replicas) needs to count its frames.
func StageParamSizes(cfg Config, lo, hi int, first, last bool) []int64 {
	var out []int64
	for _, sp := range paramLayout(cfg, lo, hi, first, last) {
		k := int64(1)
		for _, d := range sp.shape {
			k *= int64(d)
		}
		out = append(out, k)
	}
	return out
}
