package config

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/tokenizer"
)

// TestDataPathStringOrList: data.path is a string (every config before
// lists) or an array, and the resolved config reads back as it was.
func TestDataPathStringOrList(t *testing.T) {
	for _, tc := range []struct {
		toml string
		want []string
	}{
		{`path = ""`, nil},
		{`path = "corpus.txt"`, []string{"corpus.txt"}},
		{`path = ["a", "b/**/*.md"]`, []string{"a", "b/**/*.md"}},
	} {
		c, err := Parse("[data]\n"+tc.toml+"\n", "x.toml")
		if err != nil {
			t.Fatalf("%s: %v", tc.toml, err)
		}
		if !slices.Equal(c.Data.Path, tc.want) {
			t.Errorf("%s: path %q, want %q", tc.toml, c.Data.Path, tc.want)
		}
		text, err := c.TOML()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(string(text), "resolved")
		if err != nil || !slices.Equal(back.Data.Path, tc.want) {
			t.Errorf("%s: resolved config reads back %q (%v)", tc.toml, back.Data.Path, err)
		}
		if len(tc.want) == 1 && !strings.Contains(string(text), fmt.Sprintf("path = %q", strings.Join(tc.want, ""))) {
			t.Errorf("%s: one path is not written as a string:\n%s", tc.toml, text)
		}
	}
	for _, bad := range []string{`path = 3`, `path = ["a", 3]`, `path = ["a", ""]`} {
		if _, err := Parse("[data]\n"+bad+"\n", "x.toml"); err == nil || !strings.Contains(err.Error(), "data.path") {
			t.Errorf("%s: %v, want an error naming data.path", bad, err)
		}
	}
	c := Default()
	if err := c.Set("data.path=corpus/*.txt"); err != nil || !slices.Equal(c.Data.Path, []string{"corpus/*.txt"}) {
		t.Errorf("--set data.path=corpus/*.txt: %q, %v", c.Data.Path, err)
	}
	if err := c.Set(`data.path=["a","b"]`); err != nil || !slices.Equal(c.Data.Path, []string{"a", "b"}) {
		t.Errorf(`--set data.path=["a","b"]: %q, %v`, c.Data.Path, err)
	}
}

// loadRun writes text as a config file and loads it for a run.
func loadRun(t *testing.T, text string) (Config, string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "exp.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadRun(path, nil)
	return c, path, err
}

// TestVocabSizeAgainstTokenizer: byte runs keep their limit of 256; with a
// tokenizer, model.vocab_size must equal its vocabulary, and the error
// names the file, the line and the value to set.
func TestVocabSizeAgainstTokenizer(t *testing.T) {
	tk, _, err := tokenizer.Train(context.Background(), [][]byte{[]byte(strings.Repeat("the cat sat on the mat; the dog sat on the log. ", 50))}, tokenizer.DefaultTrainConfig(290))
	if err != nil {
		t.Fatal(err)
	}
	tokPath := filepath.Join(t.TempDir(), "tok.json")
	if err := tk.Save(tokPath); err != nil {
		t.Fatal(err)
	}
	v := tk.VocabSize()
	_, path, err := loadRun(t, "[model]\nvocab_size = 512\n")
	if err == nil || !strings.Contains(err.Error(), path+":2: model.vocab_size = 512") || !strings.Contains(err.Error(), "data.tokenizer") {
		t.Errorf("a byte run with vocab_size 512: %v", err)
	}
	c, _, err := loadRun(t, fmt.Sprintf("[data]\ntokenizer = %q\n\n[model]\nvocab_size = %d\n", tokPath, v))
	if err != nil || c.Model.VocabSize != v {
		t.Errorf("vocab_size = the tokenizer's %d: %v", v, err)
	}
	_, path, err = loadRun(t, fmt.Sprintf("[data]\ntokenizer = %q\n\n[model]\nvocab_size = %d\n", tokPath, v+7))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%s:5: model.vocab_size = %d", path, v+7)) || !strings.Contains(err.Error(), fmt.Sprintf("set model.vocab_size = %d", v)) {
		t.Errorf("vocab_size ≠ the tokenizer's: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope.json")
	_, path, err = loadRun(t, fmt.Sprintf("[data]\ntokenizer = %q\n", missing))
	if err == nil || !strings.Contains(err.Error(), path+":2: data.tokenizer") {
		t.Errorf("a missing tokenizer: %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.json")
	os.WriteFile(garbage, []byte("{\"not\": \"a tokenizer\"}"), 0o644)
	if _, path, err = loadRun(t, fmt.Sprintf("[data]\ntokenizer = %q\n", garbage)); err == nil || !strings.Contains(err.Error(), path+":2: data.tokenizer") {
		t.Errorf("a file that is no tokenizer: %v", err)
	}
	// Load alone reads no tokenizer (a run folder's config.toml reads back
	// anywhere), and a worker validates the config it is sent without it.
	if _, _, err := load(t, fmt.Sprintf("[data]\ntokenizer = %q\n", missing)); err != nil {
		t.Errorf("Load reads the tokenizer: %v", err)
	}
	c.Data.Tokenizer = missing
	if err := c.Validate(); err != nil {
		t.Errorf("Validate reads the tokenizer file: %v", err)
	}
}
