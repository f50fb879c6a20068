package trainer

import (
	"context"
	"path/filepath"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/engine"
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

// metaConfig is the metadata key of the resolved run config (TOML) in both
// files.
const metaConfig = "config"

// saveRun writes both files of a run folder, each atomically. The state file
// goes first: a crash between the two leaves a resumable folder.
func saveRun(ctx context.Context, eng engine.Engine, cfg config.Config, dir string, step int, wall float64) error {
	st, err := eng.State(ctx)
	if err != nil {
		return err
	}
	st.Step, st.WallSeconds = step, wall
	text, err := cfg.TOML()
	if err != nil {
		return err
	}
	md := map[string]string{metaConfig: string(text)}
	if err := stages.WriteState(filepath.Join(dir, StateFile), st, md); err != nil {
		return err
	}
	return stages.WriteCheckpoint(filepath.Join(dir, CheckpointFile), st, md)
}

// LoadState reads a run's train_state.safetensors (or, without optimizer
// state, its checkpoint.safetensors).
func LoadState(path string) (*stages.State, error) {
	st, _, err := stages.ReadState(path)
	return st, err
}
