package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/narrowband/narrowband/internal/tokenizer"
)

const tokenizerUsage = `narrowband tokenizer — byte-level BPE tokenizers (GPT-2 style)

usage:
  narrowband tokenizer train --vocab N --out FILE [flags] PATHS...

Trains a vocabulary of N tokens (256 byte tokens, the merges, the special
tokens) on PATHS, files or folders (a folder: every regular file under it),
and writes it as a Hugging Face tokenizer.json. Any byte sequence encodes
and decodes back to itself.

flags:
  --vocab N            vocabulary size, special tokens included (e.g. 4096, 8192)
  --out FILE           where to write the tokenizer.json
  --min-frequency F    merge only pairs seen at least F times (default 2)
  --special TOKEN      a special token, given the last ids (repeatable;
                       default <|endoftext|>)
  --no-special         no special tokens at all
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
		"no-special": false, "ext": true, "eval": true, "workers": true, "help": false, "h": false})
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
	if vocab == 0 || out == "" || len(a.pos) == 0 {
		return fmt.Errorf("tokenizer train: usage: narrowband tokenizer train --vocab N --out FILE PATHS... (see --help)")
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

	start := time.Now()
	files, err := tokenizer.ListFiles(a.pos, a.all("ext")...)
	if err != nil {
		return fmt.Errorf("tokenizer train: %w", err)
	}
	if len(files) == 0 {
		return fmt.Errorf("tokenizer train: no files under %v (with --ext %v)", a.pos, a.all("ext"))
	}
	docs, err := tokenizer.ReadFiles(files)
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
	fmt.Fprintf(stdout, "read %d files, %.1f MB, in %.1fs\n", len(files), float64(st.Bytes)/1e6, readTime.Seconds())
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

	if evalPaths := a.all("eval"); len(evalPaths) > 0 {
		files, err := tokenizer.ListFiles(evalPaths, a.all("ext")...)
		if err != nil {
			return fmt.Errorf("tokenizer train: --eval: %w", err)
		}
		docs, err := tokenizer.ReadFiles(files)
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
			return fmt.Errorf("tokenizer train: --eval %v holds no bytes", evalPaths)
		}
		fmt.Fprintf(stdout, "eval: %d files, %.2f MB: %d tokens, %.4f tokens/byte (%.2f bytes/token), encoded in %.1fs\n",
			len(files), float64(bytes)/1e6, tokens, float64(tokens)/float64(bytes), float64(bytes)/float64(tokens), time.Since(start).Seconds())
	}
	return nil
}
