package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/tokenizer"
)

const tokenizerUsage = `narrowband tokenizer — byte-level BPE tokenizers (GPT-2 style)

usage:
  narrowband tokenizer train --vocab N --out FILE [flags] PATHS...
  narrowband tokenizer train --vocab N --out FILE --config RUN.toml [flags]

Trains a vocabulary of N tokens (256 byte tokens, the merges, the special
tokens) on PATHS, read as data.path reads them (files, folders, globs;
.jsonl files by their records' "text"), or on the training side of a run
config's [data] (its held-out documents are never seen, and are what
tokens/byte is reported on), and writes it as a Hugging Face
tokenizer.json. Any byte sequence encodes and decodes back to itself.

flags:
  --vocab N            vocabulary size, special tokens included (e.g. 4096, 8192)
  --out FILE           where to write the tokenizer.json
  --min-frequency F    merge only pairs seen at least F times (default 2)
  --special TOKEN      a special token, given the last ids (repeatable;
                       default <|endoftext|>)
  --no-special         no special tokens at all
  --config FILE        train on FILE's [data] (path, extensions, include,
                       exclude, val_fraction) instead of PATHS
  --ext SUFFIX         in folders (--eval's too), only files ending in SUFFIX
                       (repeatable, e.g. --ext .go)
  --eval PATH          after training, encode PATH (file or folder, repeatable)
                       and report tokens per byte on it (held-out text)
  --workers N          goroutines counting the corpus (default: one per CPU)
`

func cmdTokenizer(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	if len(argv) == 0 {
		fmt.Fprint(stderr, tokenizerUsage)
		return errUsage
	}
	if argv[0] == "help" || argv[0] == "--help" || argv[0] == "-h" {
		fmt.Fprint(stdout, tokenizerUsage)
		return nil
	}
	switch argv[0] {
	case "train":
		return cmdTokenizerTrain(ctx, argv[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "narrowband tokenizer: unknown subcommand %q\n\n%s", argv[0], tokenizerUsage)
		return errUsage
	}
}

func cmdTokenizerTrain(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	a, err := parseArgs(argv, map[string]bool{"vocab": true, "out": true, "min-frequency": true, "special": true,
		"no-special": false, "ext": true, "eval": true, "workers": true, "config": true, "help": false, "h": false})
	if err != nil {
		return fmt.Errorf("tokenizer train: %w (see narrowband tokenizer --help)", err)
	}
	if a.str("help", "") == "true" || a.str("h", "") == "true" {
		fmt.Fprint(stdout, tokenizerUsage)
		return nil
	}
	vocab, err := a.int("vocab", 0)
	if err != nil {
		return err
	}
	out := a.str("out", "")
	runCfg := a.str("config", "")
	if vocab == 0 || out == "" || (len(a.pos) == 0) == (runCfg == "") {
		return fmt.Errorf("tokenizer train: usage: narrowband tokenizer train --vocab N --out FILE PATHS... (or --config RUN.toml; see --help)")
	}
	src := data.Options{Paths: a.pos, Extensions: a.all("ext")}
	if runCfg != "" {
		// Parsed, not Loaded: its data.tokenizer may well be the file
		// this command is about to write.
		text, err := os.ReadFile(runCfg)
		if err != nil {
			return fmt.Errorf("tokenizer train: %w", err)
		}
		c, err := config.Parse(string(text), runCfg)
		if err != nil {
			return fmt.Errorf("tokenizer train: %w", err)
		}
		src = data.Options{Paths: c.Data.Path, ValFraction: c.Data.ValFraction, Extensions: c.Data.Extensions,
			Include: c.Data.Include, Exclude: c.Data.Exclude, MaxBytes: c.Data.MaxBytes}
	}
	cfg := tokenizer.DefaultTrainConfig(vocab)
	if cfg.MinFrequency, err = a.int("min-frequency", cfg.MinFrequency); err != nil {
		return err
	}
	if cfg.Workers, err = a.int("workers", 0); err != nil {
		return err
	}
	if sp := a.all("special"); len(sp) > 0 {
		cfg.SpecialTokens = sp
	}
	if a.str("no-special", "") == "true" {
		if len(a.all("special")) > 0 {
			return fmt.Errorf("tokenizer train: --no-special and --special contradict each other")
		}
		cfg.SpecialTokens = nil
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("tokenizer train: %w", err)
	}

	// The folder first: training takes minutes, a path that cannot be
	// written should not wait for them.
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("tokenizer train: --out: %w", err)
	}
	start := time.Now()
	docs, man, err := data.Documents(ctx, src)
	if err != nil {
		return fmt.Errorf("tokenizer train: %w", err)
	}
	readTime := time.Since(start)
	tok, st, err := tokenizer.Train(ctx, docs, cfg)
	if err != nil {
		return err
	}
	workers := cfg.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	fmt.Fprintf(stdout, "read %d files, %d documents, %.1f MB, in %.1fs\n", len(man.Files), len(docs), float64(st.Bytes)/1e6, readTime.Seconds())
	fmt.Fprintf(stdout, "counted %d pre-tokens (%d distinct) in %.1fs on %d goroutines\n", st.Pieces, st.Words, st.CountTime.Seconds(), workers)
	fmt.Fprintf(stdout, "learned %d merges in %.1fs: %d tokens", st.Merges, st.MergeTime.Seconds(), tok.VocabSize())
	for _, s := range tok.Special() {
		fmt.Fprintf(stdout, ", %s = %d", s.Content, s.ID)
	}
	fmt.Fprintln(stdout)
	if st.StoppedEarly {
		fmt.Fprintf(stderr, "narrowband tokenizer: warning: no pair is seen %d times any more: the vocabulary has %d tokens, not %d\n",
			cfg.MinFrequency, tok.VocabSize(), vocab)
	}
	if err := tok.Save(out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", out)

	evalPaths := a.all("eval")
	if len(evalPaths) > 0 || (runCfg != "" && src.ValFraction > 0) {
		var docs [][]byte
		var err error
		what := fmt.Sprint(evalPaths)
		if len(evalPaths) > 0 {
			docs, _, err = data.Documents(ctx, data.Options{Paths: evalPaths, Extensions: a.all("ext")})
		} else {
			what = "the held-out documents of " + runCfg
			docs, err = data.HeldOutDocuments(ctx, src)
		}
		if err != nil {
			return fmt.Errorf("tokenizer train: --eval: %w", err)
		}
		start := time.Now()
		var bytes, tokens int
		for _, d := range docs {
			bytes += len(d)
			tokens += len(tok.Encode(d))
		}
		if bytes == 0 {
			return fmt.Errorf("tokenizer train: --eval: %s holds no bytes", what)
		}
		fmt.Fprintf(stdout, "eval: %d documents, %.2f MB: %d tokens, %.4f tokens/byte (%.2f bytes/token), encoded in %.1fs\n",
			len(docs), float64(bytes)/1e6, tokens, float64(tokens)/float64(bytes), float64(bytes)/float64(tokens), time.Since(start).Seconds())
	}
	return nil
}
