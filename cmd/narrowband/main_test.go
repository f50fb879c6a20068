package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/data"
)

// TestMain lets tests run this binary's main() in a child process (the test
// binary re-executed with NARROWBAND_MAIN=1), to check exit codes and that
// nothing panics.
func TestMain(m *testing.M) {
	if os.Getenv("NARROWBAND_MAIN") == "1" {
		os.Args = append([]string{"narrowband"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	// Runs and peers make keys in the user's config folder on first use:
	// give the tests (and the processes they start) one of their own.
	cfgHome, err := os.MkdirTemp("", "narrowband-test-config-*")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", cfgHome)
	code := m.Run()
	os.RemoveAll(cfgHome)
	os.Exit(code)
}

// narrowband runs the command in a child process and returns its exit code,
// stdout and stderr.
func narrowband(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "NARROWBAND_MAIN=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(errb.String(), "panic:") || strings.Contains(errb.String(), "goroutine ") {
		t.Fatalf("narrowband %v panicked:\n%s", args, errb.String())
	}
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const tinyTOML = `
[run]
name = "cli"
steps = 4
[data]
path = "%s"
val_fraction = 0.2
[model]
n_layer = 1
n_head = 2
n_embd = 16
block_size = 16
[train]
batch_size = 2
eval_interval = 2
eval_batches = 1
warmup_steps = 1
`

func TestBadInputGivesClearErrorAndExitCode(t *testing.T) {
	dir := t.TempDir()
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	good := writeFile(t, dir, "good.toml", strings.Replace(tinyTOML, "%s", strs, 1))
	notSafetensors := writeFile(t, dir, "junk.safetensors", "this is not a checkpoint at all, just text that is long enough")
	truncated := writeFile(t, dir, "trunc.safetensors", "\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":")
	text := writeFile(t, dir, "t.txt", "package main\n\nfunc main() {}\n")
	cases := []struct {
		name string
		args []string
		want []string // substrings of stderr
	}{
		{"malformed toml", []string{"run", writeFile(t, dir, "bad.toml", "[run]\nsteps = = 3\n")}, []string{"bad.toml:2"}},
		{"unknown key", []string{"run", writeFile(t, dir, "unk.toml", "[train]\nbatch_size = 2\nlearning_rat = 1\n")}, []string{"unk.toml:3", "train.learning_rat"}},
		{"bad value", []string{"run", good, "--set", "model.n_head=3"}, []string{"model.n_embd = 16", "n_head"}},
		{"bad override type", []string{"run", good, "--set", "run.steps=many"}, []string{"run.steps"}},
		{"missing corpus", []string{"run", good, "--set", "data.path=/nonexistent/corpus", "--out", filepath.Join(dir, "o1")}, []string{"/nonexistent/corpus", "data.path"}},
		{"missing config file", []string{"run", filepath.Join(dir, "nope.toml")}, []string{"nope.toml"}},
		{"not a checkpoint", []string{"eval", "--checkpoint", notSafetensors, "--text", text}, []string{"junk.safetensors"}},
		{"truncated checkpoint", []string{"eval", "--checkpoint", truncated, "--text", text}, []string{"trunc.safetensors"}},
		{"missing checkpoint", []string{"sample", "--checkpoint", filepath.Join(dir, "none.safetensors")}, []string{"none.safetensors"}},
		{"unknown command", []string{"fly"}, []string{"unknown command"}},
		{"unknown flag", []string{"run", good, "--steps", "3"}, []string{"--steps"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := narrowband(t, c.args...)
			if code == 0 {
				t.Fatalf("exit code 0 for %v; stderr:\n%s", c.args, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestRunEvalSample(t *testing.T) {
	dir := t.TempDir()
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	cfg := writeFile(t, dir, "tiny.toml", strings.Replace(tinyTOML, "%s", strs, 1))
	out := filepath.Join(dir, "run")
	code, stdout, stderr := narrowband(t, "run", cfg, "--out", out, "--set", "run.steps=3")
	if code != 0 {
		t.Fatalf("run failed (%d):\n%s", code, stderr)
	}
	if !strings.Contains(stdout, out) {
		t.Errorf("run does not say where its results are:\n%s", stdout)
	}
	for _, f := range []string{"config.toml", "metrics.jsonl", "summary.json", "checkpoint.safetensors", "timeline.jsonl", "report.md", "loss_vs_tokens.png", "loss_vs_tokens.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("run folder lacks %s", f)
		}
	}
	var sum map[string]any
	b, _ := os.ReadFile(filepath.Join(out, "summary.json"))
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"final_val_loss", "tokens", "wall_seconds", "tokens_per_second", "params", "name", "seed"} {
		if _, ok := sum[k]; !ok {
			t.Errorf("summary.json lacks %s", k)
		}
	}
	if sum["tokens"].(float64) != 3*2*16 {
		t.Errorf("tokens = %v, want 3 steps × 2 × 16", sum["tokens"])
	}

	text := filepath.Join(strs, "reader.go")
	code, stdout, stderr = narrowband(t, "eval", "--checkpoint", filepath.Join(out, "checkpoint.safetensors"), "--text", text)
	if code != 0 {
		t.Fatalf("eval failed:\n%s", stderr)
	}
	var ev struct {
		Loss  float64 `json:"loss_nats_per_byte"`
		Bytes int     `json:"bytes"`
	}
	if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
		t.Fatalf("eval output is not one JSON object: %v\n%s", err, stdout)
	}
	fi, _ := os.Stat(text)
	if ev.Bytes <= 0 || ev.Bytes >= int(fi.Size()) || ev.Loss <= 0 || ev.Loss > 6 {
		t.Errorf("eval: %+v on a %d-byte file", ev, fi.Size())
	}

	code, stdout, stderr = narrowband(t, "sample", "--checkpoint", filepath.Join(out, "checkpoint.safetensors"), "--prompt", "func ", "--tokens", "20", "--seed", "3")
	if code != 0 {
		t.Fatalf("sample failed:\n%s", stderr)
	}
	if !strings.HasPrefix(stdout, "func ") || len(stdout) < len("func ")+1 {
		t.Errorf("sample output %q does not continue the prompt", stdout)
	}
	_, again, _ := narrowband(t, "sample", "--checkpoint", filepath.Join(out, "checkpoint.safetensors"), "--prompt", "func ", "--tokens", "20", "--seed", "3")
	if again != stdout {
		t.Errorf("same seed sampled differently: %q vs %q", stdout, again)
	}
}
