package trainer

import (
	"context"
	"path/filepath"
	"time"

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

// checkpoint gathers the engine's state at step and writes both files.
func (r *run) checkpoint(ctx context.Context, step int) error {
	st, err := r.eng.State(ctx)
	if err != nil {
		return err
	}
	return r.write(st, step, r.wallBefore+time.Since(r.t0).Seconds())
}

// write writes both files of a run folder, each atomically. The state
// file goes first: a crash between the two leaves a resumable folder.
func (r *run) write(st *stages.State, step int, wall float64) error {
	st.Step, st.WallSeconds = step, wall
	text, err := r.cfg.TOML()
	if err != nil {
		return err
	}
	md := r.metadata()
	md[metaConfig] = string(text)
	if err := stages.WriteState(filepath.Join(r.o.Out, StateFile), st, md); err != nil {
		return err
	}
	if err := stages.WriteCheckpoint(filepath.Join(r.o.Out, CheckpointFile), st, md); err != nil {
		return err
	}
	r.saved, r.lastSave = step, time.Now()
	return nil
}

// LoadState reads a run's train_state.safetensors (or, without optimizer
// state, its checkpoint.safetensors).
func LoadState(path string) (*stages.State, error) {
	st, _, err := stages.ReadState(path)
	return st, err
}
