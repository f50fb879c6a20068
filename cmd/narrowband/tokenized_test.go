package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/data"
)

// TestTokenizedRunEval: the whole path a user takes — train a tokenizer,
// run on its ids, evaluate and sample the checkpoint with the tokenizer the
// run left beside it — and the errors when that file is missing or not the
// run's own.
func TestTokenizedRunEval(t *testing.T) {
	dir := t.TempDir()
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	tok := filepath.Join(dir, "tok.json")
	code, _, stderr := narrowband(t, "tokenizer", "train", "--vocab", "400", "--out", tok, "--ext", ".go", strs)
	if code != 0 {
		t.Fatalf("tokenizer train failed (%d):\n%s", code, stderr)
	}
	cfg := writeFile(t, dir, "tiny.toml", strings.Replace(tinyTOML, "%s", strs, 1))
	// vocab_size must be the tokenizer's: the error says which.
	code, _, stderr = narrowband(t, "run", cfg, "--out", filepath.Join(dir, "bad"), "--set", "data.tokenizer="+tok, "--set", "model.vocab_size=300")
	if code == 0 || !strings.Contains(stderr, "set model.vocab_size = 400") {
		t.Fatalf("a vocab_size that is not the tokenizer's: exit %d\n%s", code, stderr)
	}
	out := filepath.Join(dir, "run")
	code, stdout, stderr := narrowband(t, "run", cfg, "--out", out, "--set", "run.steps=3", "--set", "data.tokenizer="+tok,
		"--set", "model.vocab_size=400", "--set", "data.cache_dir="+filepath.Join(dir, "cache"))
	if code != 0 {
		t.Fatalf("run failed (%d):\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "final_val_loss_per_byte") || !strings.Contains(stdout, "nats/token, ") {
		t.Errorf("the run's last line does not give the loss per byte:\n%s", stderr)
	}
	ckpt := filepath.Join(out, "checkpoint.safetensors")
	text := filepath.Join(strs, "reader.go")
	code, stdout, stderr = narrowband(t, "eval", "--checkpoint", ckpt, "--text", text)
	if code != 0 {
		t.Fatalf("eval failed:\n%s", stderr)
	}
	var ev struct {
		PerToken  float64 `json:"loss_nats_per_token"`
		PerByte   float64 `json:"loss_nats_per_byte"`
		Tokens    int     `json:"tokens"`
		Bytes     int     `json:"bytes"`
		Tokenizer string  `json:"tokenizer"`
		Named     string  `json:"tokenizer_sha256"`
	}
	if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
		t.Fatalf("eval output: %v\n%s", err, stdout)
	}
	fi, _ := os.Stat(text)
	if ev.Tokenizer == "bytes" || ev.Tokenizer != ev.Named || ev.Tokens >= ev.Bytes || ev.Bytes > int(fi.Size()) ||
		!(ev.PerByte > 0 && ev.PerByte < ev.PerToken) {
		t.Errorf("eval with the run's tokenizer: %+v on a %d-byte file", ev, fi.Size())
	}
	code, stdout, stderr = narrowband(t, "sample", "--checkpoint", ckpt, "--prompt", "func ", "--tokens", "10", "--seed", "3")
	if code != 0 || !strings.HasPrefix(stdout, "func ") {
		t.Fatalf("sample: exit %d, %q\n%s", code, stdout, stderr)
	}

	beside := filepath.Join(out, data.TokenizerName)
	b, _ := os.ReadFile(beside)
	os.WriteFile(beside, append(b, ' '), 0o644)
	if code, _, stderr = narrowband(t, "eval", "--checkpoint", ckpt, "--text", text); code == 0 || !strings.Contains(stderr, "sha256") {
		t.Errorf("another tokenizer beside the checkpoint: exit %d\n%s", code, stderr)
	}
	os.Remove(beside)
	if code, _, stderr = narrowband(t, "eval", "--checkpoint", ckpt, "--text", text); code == 0 || !strings.Contains(stderr, "missing") {
		t.Errorf("no tokenizer beside the checkpoint: exit %d\n%s", code, stderr)
	}
}
