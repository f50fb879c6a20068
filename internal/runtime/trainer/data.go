package trainer

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
)

// metaTokenizer is the checkpoint metadata key of the sha256 of the run's
// tokenizer.json ("bytes" for byte runs); the file itself is copied into
// the run folder beside the checkpoint (data.TokenizerName).
const metaTokenizer = "narrowband.tokenizer_sha256"

// MetaTokenizer is metaTokenizer, for readers of checkpoints (eval).
const MetaTokenizer = metaTokenizer

// loadCorpus reads data.tokenizer and the corpus (from the token cache when
// a run encoded it before).
func (r *run) loadCorpus(ctx context.Context, maxBytes int64) error {
	cfg := r.cfg
	o := data.Options{Paths: cfg.Data.Path, ValFraction: cfg.Data.ValFraction, Extensions: cfg.Data.Extensions,
		Include: cfg.Data.Include, Exclude: cfg.Data.Exclude, MinTokens: cfg.Model.BlockSize + 1, MaxBytes: maxBytes,
		CacheDir: cfg.Data.CacheDir}
	if err := r.loadTokenizer(); err != nil {
		return err
	}
	if r.tok != nil {
		o.Tokenizer, o.TokenizerHash = r.tok.Tokenizer, r.tok.SHA256
	}
	t0 := time.Now()
	corpus, err := data.Load(ctx, o)
	if err != nil {
		return err
	}
	r.corpus, r.ownCorpus = corpus, true
	for _, w := range corpus.Warnings {
		r.log.Warn("corpus", "warning", w)
	}
	args := []any{"source", corpus.Source, "train_tokens", corpus.Train.Len(), "val_tokens", corpus.Val.Len(),
		"train_docs", corpus.TrainDocs, "val_docs", corpus.ValDocs, "seconds", round4(time.Since(t0).Seconds())}
	if r.tok != nil {
		args = append(args, "tokenizer", cfg.Data.Tokenizer, "cache", corpus.Cache, "cache_hit", corpus.CacheHit)
	}
	if n := len(corpus.Manifest.Skipped); n > 0 {
		args = append(args, "skipped", n)
	}
	r.log.Info("corpus loaded", args...)
	return nil
}

// loadTokenizer reads data.tokenizer and checks model.vocab_size against
// it (config.Load did too, but a config built in code skips Load).
func (r *run) loadTokenizer() error {
	if r.cfg.Data.Bytes() || r.tok != nil {
		return nil
	}
	tk, err := data.ReadTokenizer(r.cfg.Data.Tokenizer)
	if err != nil {
		return fmt.Errorf("data.tokenizer: %w", err)
	}
	if v := tk.VocabSize(); r.cfg.Model.VocabSize != v {
		return fmt.Errorf("model.vocab_size = %d: must equal the vocabulary of data.tokenizer (%s has %d tokens): set model.vocab_size = %d", r.cfg.Model.VocabSize, r.cfg.Data.Tokenizer, v, v)
	}
	r.tok = tk
	return nil
}

// writeDataFiles writes manifest.json and, for a tokenized run, a copy of
// tokenizer.json into the run folder, so the folder alone says what was
// read and how to encode text for its checkpoint.
func (r *run) writeDataFiles() error {
	if m := r.corpus.Manifest; m != nil {
		if err := m.Write(filepath.Join(r.o.Out, data.ManifestName)); err != nil {
			return err
		}
	}
	if r.tok != nil {
		return metrics.WriteFileAtomic(filepath.Join(r.o.Out, data.TokenizerName), r.tok.JSON)
	}
	return nil
}

// tokenizerHash is what checkpoints name the run's tokenizer by.
func (r *run) tokenizerHash() string {
	if r.tok == nil {
		return "bytes"
	}
	return r.tok.SHA256
}

// sameTokenizer refuses to resume a checkpoint trained on other ids than
// data.tokenizer gives now (the same path may hold another file). A
// checkpoint from before tokenizers names none: it was a byte run.
func sameTokenizer(md map[string]string, cfg config.Config) error {
	want, ok := md[metaTokenizer]
	if !ok {
		want = "bytes"
	}
	have := "bytes"
	if !cfg.Data.Bytes() {
		tk, err := data.ReadTokenizer(cfg.Data.Tokenizer)
		if err != nil {
			return fmt.Errorf("data.tokenizer: %w", err)
		}
		have = tk.SHA256
	}
	if have != want {
		return fmt.Errorf("the checkpoint was trained with tokenizer %s, but data.tokenizer (%q) is %s: resume with the run's own tokenizer.json (a copy is in its folder)", want, cfg.Data.Tokenizer, have)
	}
	return nil
}
