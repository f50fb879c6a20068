package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
)

// TestExperimentFilesAreValid: every scenario in experiments/ parses,
// validates and expands its sweep.
func TestExperimentFilesAreValid(t *testing.T) {
	files, _ := filepath.Glob("../../experiments/*.toml")
	if len(files) < 4 {
		t.Fatalf("found %d experiment files", len(files))
	}
	for _, f := range files {
		c, err := config.Load(f, nil)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if _, err := c.Variants(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestSweepOfCodecsAndBandwidths: the 3 codecs × 2 bandwidths experiment
// runs from one file and one command (shrunk here) and leaves its six runs
// side by side in the plots and the report.
func TestSweepOfCodecsAndBandwidths(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six small pipelines")
	}
	out := filepath.Join(t.TempDir(), "sweep")
	code, stdout, stderr := narrowband(t, "run", "../../experiments/codecs-bandwidth.toml", "--out", out,
		"--set", "run.steps=3", "--set", "model.n_embd=32", "--set", "model.block_size=32", "--set", "train.eval_interval=3", "--set", "train.eval_batches=1",
		"--set", "data.path="+filepath.Join(data.GoRoot(), "src", "strings"), "--set", "data.val_fraction=0.2")
	_ = stdout
	if code != 0 {
		t.Fatalf("sweep failed (%d):\n%s", code, stderr)
	}
	runs, _ := filepath.Glob(filepath.Join(out, "*", "summary.json"))
	if len(runs) != 6 {
		t.Fatalf("%d runs finished, want 3 codecs × 2 bandwidths", len(runs))
	}
	for _, f := range []string{"sweep.json", "summary.md", "report.md", "tokens_per_second_vs_bandwidth.png", "wire_bytes_per_token.png", "loss_vs_tokens.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("sweep folder lacks %s", f)
		}
	}
	rep, _ := os.ReadFile(filepath.Join(out, "report.md"))
	for _, codec := range []string{"none", "int8", "subspace"} {
		if !strings.Contains(string(rep), codec) {
			t.Errorf("report.md does not mention %s", codec)
		}
	}
}
