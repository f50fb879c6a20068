package trainer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/tokenizer"
	"github.com/narrowband/narrowband/stages"
)

// tokenizedRun is a folder of real Go files copied from the standard
// library, a BPE tokenizer of about 512 ids trained on them, and a tiny
// two-stage pipeline config that trains on their ids.
func tokenizedRun(t *testing.T) (config.Config, *tokenizer.Tokenizer, []byte) {
	t.Helper()
	src := filepath.Join(data.GoRoot(), "src", "strings")
	corpus := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(corpus, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	tk, _, err := tokenizer.Train(context.Background(), docs, tokenizer.DefaultTrainConfig(512))
	if err != nil {
		t.Fatal(err)
	}
	tokPath := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := tk.Save(tokPath); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(tokPath)
	if err != nil {
		t.Fatal(err)
	}
	c := tinyConfig(t)
	c.Data.Path = config.Paths{corpus}
	c.Data.Tokenizer = tokPath
	c.Data.CacheDir = t.TempDir()
	c.Model.VocabSize = tk.VocabSize()
	c.Pipeline.Stages = 2
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckTokenizer(); err != nil {
		t.Fatal(err)
	}
	return c, tk, raw
}

// TestTokenizedPipelineRun: a two-stage in-process run on a trained
// tokenizer's ids trains, evaluates per token and per byte, and leaves a
// folder that says how to encode text for its checkpoint; a second run
// reads the ids from the cache and repeats the first bit for bit.
func TestTokenizedPipelineRun(t *testing.T) {
	c, tk, raw := tokenizedRun(t)
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	if tk.VocabSize() < 400 {
		t.Fatalf("the tokenizer has only %d ids", tk.VocabSize())
	}
	// A first step's loss is about ln(vocab): the ids are the tokenizer's.
	ls := losses(t, dir)
	if math.Abs(ls[0]-math.Log(float64(tk.VocabSize()))) > 0.5 {
		t.Errorf("first loss %.3f, want about ln(%d) = %.3f", ls[0], tk.VocabSize(), math.Log(float64(tk.VocabSize())))
	}
	if !(sum.FinalValLoss > 0) || !(sum.FinalValLossPerByte > 0) || sum.FinalValLossPerByte >= sum.FinalValLoss/1.5 {
		t.Errorf("held-out %.4f nats/token, %.4f nats/byte: tokens of Go source cover well over 1.5 bytes each", sum.FinalValLoss, sum.FinalValLossPerByte)
	}
	recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	evals := 0
	for _, r := range recs {
		if r.ValLoss != nil {
			evals++
			if r.ValLossPerByte == nil || *r.ValLossPerByte >= *r.ValLoss {
				t.Errorf("step %d: val_loss %v, val_loss_per_byte %v", r.Step, *r.ValLoss, r.ValLossPerByte)
			}
		}
	}
	if evals != 2 {
		t.Errorf("%d evaluations, want 2", evals)
	}
	// The folder: the tokenizer as it was, named by its hash in both
	// checkpoint files; the manifest of the corpus.
	got, err := os.ReadFile(filepath.Join(dir, data.TokenizerName))
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("tokenizer.json beside the checkpoint: %v (equal %v)", err, bytes.Equal(got, raw))
	}
	h := sha256.Sum256(raw)
	for _, f := range []string{CheckpointFile, StateFile} {
		_, md, err := stages.ReadSafetensors(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if md[MetaTokenizer] != hex.EncodeToString(h[:]) {
			t.Errorf("%s names tokenizer %q, want %x", f, md[MetaTokenizer], h)
		}
	}
	var m data.Manifest
	b, err := os.ReadFile(filepath.Join(dir, data.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.Tokenizer != hex.EncodeToString(h[:]) || len(m.Files) < 5 || m.ValDocuments == 0 || m.TrainTokens == 0 || m.TrainTokens >= m.TrainBytes {
		t.Errorf("manifest: tokenizer %s, %d files, %d held out, %d tokens of %d bytes", m.Tokenizer, len(m.Files), m.ValDocuments, m.TrainTokens, m.TrainBytes)
	}
	// The folder's config.toml names the folder's copy: the run resumes
	// from its folder alone, the original tokenizer gone.
	resolved, err := config.Load(filepath.Join(dir, "config.toml"), nil)
	if err != nil || resolved.Data.Tokenizer != filepath.Join(dir, data.TokenizerName) {
		t.Fatalf("config.toml names tokenizer %q (%v), want the folder's copy", resolved.Data.Tokenizer, err)
	}
	if err := os.Remove(c.Data.Tokenizer); err != nil {
		t.Fatal(err)
	}
	resolved.Run.Steps = 8
	if _, err := Run(context.Background(), Options{Config: resolved, Out: t.TempDir(), Resume: dir}); err != nil {
		t.Fatalf("resume from the folder alone: %v", err)
	}
	if err := os.WriteFile(c.Data.Tokenizer, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	caches, _ := filepath.Glob(filepath.Join(c.Data.CacheDir, "*.tokens"))
	if len(caches) != 1 {
		t.Fatalf("token caches %v, want one", caches)
	}
	before, _ := os.Stat(caches[0])

	dir2 := t.TempDir()
	sum2 := runTiny(t, c, dir2)
	if after, _ := os.Stat(caches[0]); !after.ModTime().Equal(before.ModTime()) {
		t.Error("the second run rewrote the token cache")
	}
	if sum2.FinalValLoss != sum.FinalValLoss || sum2.FinalValLossPerByte != sum.FinalValLossPerByte || sum2.DataHash != sum.DataHash {
		t.Errorf("from the cache: val %v / %v per byte, data %s; the first run: %v / %v, %s", sum2.FinalValLoss, sum2.FinalValLossPerByte, sum2.DataHash, sum.FinalValLoss, sum.FinalValLossPerByte, sum.DataHash)
	}
}

// TestByteRunLossPerByteIsPerToken: in a byte run a token is a byte.
func TestByteRunLossPerByteIsPerToken(t *testing.T) {
	c := tinyConfig(t)
	c.Run.Steps = 3
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	if sum.FinalValLossPerByte != sum.FinalValLoss {
		t.Errorf("byte run: %v nats/token, %v nats/byte", sum.FinalValLoss, sum.FinalValLossPerByte)
	}
	if _, err := os.Stat(filepath.Join(dir, data.TokenizerName)); !os.IsNotExist(err) {
		t.Errorf("a byte run wrote tokenizer.json (%v)", err)
	}
	_, md, err := stages.ReadSafetensors(filepath.Join(dir, CheckpointFile))
	if err != nil || md[MetaTokenizer] != "bytes" {
		t.Errorf("byte run checkpoint names tokenizer %q (%v)", md[MetaTokenizer], err)
	}
	if _, err := os.Stat(filepath.Join(dir, data.ManifestName)); err != nil {
		t.Errorf("no manifest: %v", err)
	}
}

// TestTokenizerVocabMismatchRefused: a config built in code (no Load)
// whose vocab_size is not the tokenizer's is refused before training.
func TestTokenizerVocabMismatchRefused(t *testing.T) {
	c, tk, _ := tokenizedRun(t)
	c.Model.VocabSize = tk.VocabSize() + 1
	_, err := Run(context.Background(), Options{Config: c, Out: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "model.vocab_size") {
		t.Fatalf("got %v, want model.vocab_size refused", err)
	}
}

// TestResumeNeedsTheSameTokenizer: a tokenized run resumes with its own
// tokenizer, and is refused with another file at the same path (its ids
// would mean other text).
func TestResumeNeedsTheSameTokenizer(t *testing.T) {
	c, _, raw := tokenizedRun(t)
	dir := t.TempDir()
	runTiny(t, c, dir)
	c.Run.Steps = 8
	if _, err := Run(context.Background(), Options{Config: c, Out: t.TempDir(), Resume: dir}); err != nil {
		t.Fatalf("resume with the run's tokenizer: %v", err)
	}
	// Another tokenizer.json where the run's was.
	other := bytes.Replace(raw, []byte(`"version":"1.0"`), []byte(`"version": "1.0"`), 1)
	if bytes.Equal(other, raw) {
		t.Fatal("could not make another tokenizer file")
	}
	if err := os.WriteFile(c.Data.Tokenizer, other, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Run(context.Background(), Options{Config: c, Out: t.TempDir(), Resume: dir})
	if err == nil || !strings.Contains(err.Error(), "tokenizer") {
		t.Fatalf("resume with another tokenizer: %v, want it refused", err)
	}
}

// TestSweepTablePerByte: a sweep of byte runs reads as before; one with a
// tokenized variant gets the per-byte column that compares them.
func TestSweepTablePerByte(t *testing.T) {
	c := config.Default()
	byteRun := SweepResult{Values: map[string]string{"data.tokenizer": `"bytes"`}, Summary: &metrics.Summary{FinalValLoss: 2.5, FinalValLossPerByte: 2.5}}
	bpe := SweepResult{Values: map[string]string{"data.tokenizer": `"tok.json"`}, Summary: &metrics.Summary{FinalValLoss: 3.75, FinalValLossPerByte: 1.25}}
	if tab := SweepTable(c, []SweepResult{byteRun}); strings.Contains(tab, "per byte") {
		t.Errorf("byte runs:\n%s", tab)
	}
	tab := SweepTable(c, []SweepResult{byteRun, bpe})
	if !strings.Contains(tab, "final val loss | per byte |") || !strings.Contains(tab, "| tok.json | 3.7500 | 1.2500 |") {
		t.Errorf("a tokenized variant:\n%s", tab)
	}
}

// TestSweepChecksEveryTokenizerFirst: a sweep whose last variant names a
// missing tokenizer is refused before its first variant trains.
func TestSweepChecksEveryTokenizerFirst(t *testing.T) {
	c := tinyConfig(t)
	missing := filepath.Join(t.TempDir(), "tok.json")
	c.Variant = []map[string]any{{"name": "bytes"}, {"name": "bpe", "data.tokenizer": missing, "model.vocab_size": int64(4096)}}
	out := t.TempDir()
	_, err := RunSweep(context.Background(), Options{Config: c, Out: out})
	if err == nil || !strings.Contains(err.Error(), "variant bpe") || !strings.Contains(err.Error(), "data.tokenizer") {
		t.Fatalf("got %v, want variant bpe's data.tokenizer refused", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) > 0 {
		t.Errorf("the sweep wrote %d entries before refusing", len(ents))
	}
}
