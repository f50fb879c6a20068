package main

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
)

// TestFastKernelsKeepTheLossCurve: the same short run trained with the
// SIMD kernels (this binary) and with the portable Go loops (a build with
// -tags purego: no assembly anywhere) gives the same loss curve to float
// tolerance.
func TestFastKernelsKeepTheLossCurve(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a second binary")
	}
	dir := t.TempDir()
	slow := filepath.Join(dir, "narrowband-purego")
	build := exec.Command("go", "build", "-tags", "purego", "-o", slow, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags purego: %v\n%s", err, out)
	}
	cfg := writeFile(t, dir, "k.toml", strings.Replace(tinyTOML, "%s", filepath.Join(data.GoRoot(), "src", "strings"), 1))
	args := []string{"run", cfg, "--set", "run.steps=12", "--set", "model.n_layer=2", "--set", "model.n_embd=64", "--set", "model.block_size=64", "--set", "train.batch_size=4"}
	fast := filepath.Join(dir, "fast")
	if code, _, stderr := narrowband(t, append(args, "--out", fast)...); code != 0 {
		t.Fatalf("fast run: %s", stderr)
	}
	ref := filepath.Join(dir, "ref")
	cmd := exec.Command(slow, append(args, "--out", ref)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("purego run: %v\n%s", err, out)
	}
	a, err := metrics.ReadJSONL(filepath.Join(fast, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := metrics.ReadJSONL(filepath.Join(ref, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 12 || len(b) != 12 {
		t.Fatalf("%d and %d steps recorded, want 12", len(a), len(b))
	}
	worst := 0.0
	for i := range a {
		d := math.Abs(a[i].Loss-b[i].Loss) / b[i].Loss
		worst = math.Max(worst, d)
		if d > 1e-4 {
			t.Errorf("step %d: loss %.7f with SIMD kernels, %.7f with Go loops", i+1, a[i].Loss, b[i].Loss)
		}
	}
	t.Logf("largest relative loss difference over 12 steps: %.2g", worst)
	os.Remove(slow)
}
