package trainer

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/stages"
)

// File names in a run folder.
const (
	// CheckpointFile holds the model's weights only, under nanoGPT's names,
	// so PyTorch users can load it as it is.
	CheckpointFile = "checkpoint.safetensors"
	// StateFile holds what --resume needs: weights, AdamW moments, the step.
	StateFile = "train_state.safetensors"
)

// Metadata keys of both files.
const (
	metaModel  = "model"        // nanoGPT GPTConfig fields as JSON
	metaConfig = "config"       // the resolved run config as TOML
	metaStep   = "step"         // optimizer steps done
	metaWall   = "wall_seconds" // wall-clock time of the run so far
)

// State is a whole model with its optimizer state, gathered from every stage
// of whatever engine trained it: weights under nanoGPT's names (the tied
// embedding once, as transformer.wte.weight) and AdamW moments as
// optim.m.<name> / optim.v.<name>.
type State struct {
	Model       stages.Config
	Step        int
	OptimStep   int
	WallSeconds float64
	Tensors     []stages.Tensor
}

// addStage copies one stage's weights and moments into the state. The LM
// head copy of a last stage that is not first is left out: it equals
// transformer.wte.weight, and so do its moments.
func (s *State) addStage(st *stages.Stage, opt *stages.AdamW) {
	keep := func(name string) bool { return !strings.HasSuffix(name, "lm_head.weight") }
	for _, t := range st.StateDict() {
		if keep(t.Name) {
			s.Tensors = append(s.Tensors, cloneTensor(t))
		}
	}
	step, ts := opt.State()
	s.OptimStep = step
	for _, t := range ts {
		if keep(t.Name) {
			s.Tensors = append(s.Tensors, cloneTensor(t))
		}
	}
}

// restoreStage loads this state into one stage of any split.
func (s *State) restoreStage(st *stages.Stage, opt *stages.AdamW) error {
	ts := s.Tensors
	hasHead := false
	for _, t := range ts {
		hasHead = hasHead || t.Name == "lm_head.weight"
	}
	if _, _, first, last := st.Range(); last && !first && !hasHead {
		// The LM head and its moments are the tied embedding's.
		for _, t := range s.Tensors {
			if strings.HasSuffix(t.Name, "transformer.wte.weight") {
				ts = append(ts, stages.Tensor{Name: strings.Replace(t.Name, "transformer.wte.weight", "lm_head.weight", 1), Shape: t.Shape, Data: t.Data})
			}
		}
	}
	if err := st.LoadStateDict(ts); err != nil {
		return err
	}
	return opt.LoadState(s.OptimStep, ts)
}

func cloneTensor(t stages.Tensor) stages.Tensor {
	return stages.Tensor{Name: t.Name, Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Data...)}
}

// nanoGPTConfig is GPTConfig's field names, for the checkpoint metadata.
func nanoGPTConfig(m stages.Config) string {
	b, _ := json.Marshal(map[string]any{
		"n_layer": m.NLayer, "n_head": m.NHead, "n_embd": m.NEmbd,
		"block_size": m.BlockSize, "vocab_size": m.VocabSize, "bias": m.Bias,
	})
	return string(b)
}

// saveRun writes both files of a run folder, each atomically. The state file
// goes first: a crash between the two leaves a resumable folder.
func saveRun(ctx context.Context, eng engine, cfg config.Config, dir string, step int, wall float64) error {
	st, err := eng.State(ctx)
	if err != nil {
		return err
	}
	st.Step, st.WallSeconds = step, wall
	text, err := cfg.TOML()
	if err != nil {
		return err
	}
	md := map[string]string{
		metaModel:            nanoGPTConfig(st.Model),
		metaConfig:           string(text),
		metaStep:             strconv.Itoa(step),
		metaWall:             strconv.FormatFloat(wall, 'g', -1, 64),
		stages.MetaOptimStep: strconv.Itoa(st.OptimStep),
	}
	if err := stages.WriteSafetensors(filepath.Join(dir, StateFile), st.Tensors, md); err != nil {
		return err
	}
	var weights []stages.Tensor
	hasHead := false
	for _, t := range st.Tensors {
		hasHead = hasHead || t.Name == "lm_head.weight"
	}
	for _, t := range st.Tensors {
		if !strings.HasPrefix(t.Name, "optim.") {
			weights = append(weights, t)
			if t.Name == "transformer.wte.weight" && !hasHead {
				weights = append(weights, stages.Tensor{Name: "lm_head.weight", Shape: t.Shape, Data: t.Data})
			}
		}
	}
	delete(md, stages.MetaOptimStep)
	delete(md, metaWall)
	return stages.WriteSafetensors(filepath.Join(dir, CheckpointFile), weights, md)
}

// LoadState reads a train_state.safetensors (or, without optimizer state,
// a checkpoint.safetensors) file.
func LoadState(path string) (*State, error) {
	ts, md, err := stages.ReadSafetensors(path)
	if err != nil {
		return nil, err
	}
	m, err := ModelFromMetadata(md)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	st := &State{Model: m, Tensors: ts}
	if st.Step, err = strconv.Atoi(md[metaStep]); err != nil {
		return nil, fmt.Errorf("%s: metadata %q = %q is not a step number; is this a narrowband run's %s?", path, metaStep, md[metaStep], StateFile)
	}
	if v, ok := md[stages.MetaOptimStep]; ok {
		if st.OptimStep, err = strconv.Atoi(v); err != nil {
			return nil, fmt.Errorf("%s: metadata %q = %q is not a number", path, stages.MetaOptimStep, v)
		}
	}
	st.WallSeconds, _ = strconv.ParseFloat(md[metaWall], 64)
	return st, nil
}

// ModelFromMetadata reads the model shape a checkpoint was saved with.
func ModelFromMetadata(md map[string]string) (stages.Config, error) {
	js, ok := md[metaModel]
	if !ok {
		return stages.Config{}, fmt.Errorf("no %q entry in the safetensors metadata: not a narrowband checkpoint (it needs the model's shape)", metaModel)
	}
	var g struct {
		NLayer    int  `json:"n_layer"`
		NHead     int  `json:"n_head"`
		NEmbd     int  `json:"n_embd"`
		BlockSize int  `json:"block_size"`
		VocabSize int  `json:"vocab_size"`
		Bias      bool `json:"bias"`
	}
	if err := json.Unmarshal([]byte(js), &g); err != nil {
		return stages.Config{}, fmt.Errorf("metadata %q is not valid JSON: %v", metaModel, err)
	}
	m := stages.Config{NLayer: g.NLayer, NHead: g.NHead, NEmbd: g.NEmbd, BlockSize: g.BlockSize, VocabSize: g.VocabSize, Bias: g.Bias}
	if err := m.Validate(); err != nil {
		return stages.Config{}, fmt.Errorf("metadata %q: %w", metaModel, err)
	}
	return m, nil
}

// LoadModel reads a checkpoint into a whole-model stage for evaluation or
// sampling, with room for batches of maxB sequences.
func LoadModel(path string, maxB int) (*stages.Stage, error) {
	ts, md, err := stages.ReadSafetensors(path)
	if err != nil {
		return nil, err
	}
	m, err := ModelFromMetadata(md)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	st, err := stages.NewStage(m, 0, m.NLayer, true, true, maxB, 1)
	if err != nil {
		return nil, err
	}
	if err := st.LoadStateDict(ts); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// EvalText is `narrowband eval`: the model's mean loss per predicted byte on
// text, cut into windows of block_size+1 bytes (data.Chunks).
func EvalText(ctx context.Context, st *stages.Stage, maxB int, windows [][]byte) (float64, error) {
	return evalWindows(ctx, st, 0, maxB, windows)
}
