package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/stages"
)

// evalBatch is how many windows eval runs at once.
const evalBatch = 16

// maxEvalText bounds the text eval reads (1 GiB).
const maxEvalText = 1 << 30

func cmdEval(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	a, err := parseArgs(argv, map[string]bool{"checkpoint": true, "text": true})
	if err != nil {
		return err
	}
	ckpt, textPath := a.str("checkpoint", ""), a.str("text", "")
	if ckpt == "" || textPath == "" || len(a.pos) > 0 {
		return fmt.Errorf("eval: usage: narrowband eval --checkpoint FILE --text FILE")
	}
	// A regular file only, bounded and stoppable: /dev/zero or a pipe
	// would otherwise be read forever.
	text, err := data.ReadText(ctx, textPath, maxEvalText)
	if err != nil {
		return fmt.Errorf("eval: --text: %w", err)
	}
	st, err := stages.LoadModel(ckpt, evalBatch)
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	tok, err := checkpointTokenizer(ckpt, st.Config().VocabSize)
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	ids := tok.encode(text)
	win := data.Chunks(ids, st.Config().BlockSize)
	if len(win) == 0 {
		return fmt.Errorf("eval: %s has %d tokens; need at least 2 to predict anything", textPath, len(ids))
	}
	loss, err := stages.EvalLoss(ctx, st, 0, evalBatch, win)
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	// Per byte of the text the scored tokens cover (each window's first
	// token is context only): the figure that compares tokenizers.
	n, nb := 0, 0
	for _, w := range win {
		for _, id := range w[1:] {
			n++
			nb += tok.bytes(id)
		}
	}
	perByte := loss * float64(n) / float64(max(nb, 1))
	out := map[string]any{
		"loss_nats_per_token": loss,
		"loss_nats_per_byte":  perByte,
		"bits_per_byte":       perByte / 0.6931471805599453,
		"tokens":              n,
		"bytes":               nb,
		"tokenizer":           tok.name(),
		"checkpoint":          ckpt,
		"text":                textPath,
	}
	// What the checkpoint says it is: its run's ledger head, config, data
	// and code (absent from checkpoints of older runs).
	if _, md, err := stages.ReadSafetensors(ckpt); err == nil {
		for k, name := range map[string]string{"narrowband.ledger_head": "ledger_head", "narrowband.config_sha256": "config_sha256",
			"narrowband.data_sha256": "data_sha256", "narrowband.code": "code_version", "narrowband.tokenizer_sha256": "tokenizer_sha256", "step": "step"} {
			if v, ok := md[k]; ok {
				out[name] = v
			}
		}
	}
	return json.NewEncoder(stdout).Encode(out)
}

func cmdSample(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	a, err := parseArgs(argv, map[string]bool{"checkpoint": true, "prompt": true, "tokens": true, "temperature": true, "top-k": true, "seed": true})
	if err != nil {
		return err
	}
	ckpt := a.str("checkpoint", "")
	if ckpt == "" || len(a.pos) > 0 {
		return fmt.Errorf("sample: usage: narrowband sample --checkpoint FILE [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]")
	}
	n, err := a.int("tokens", 200)
	if err != nil {
		return err
	}
	topK, err := a.int("top-k", 0)
	if err != nil {
		return err
	}
	seed, err := a.int("seed", 1)
	if err != nil {
		return err
	}
	temp, err := a.float("temperature", 0.8)
	if err != nil {
		return err
	}
	if n < 0 || n > 1<<20 {
		return fmt.Errorf("sample: --tokens %d: want 0..%d", n, 1<<20)
	}
	if temp < 0 {
		return fmt.Errorf("sample: --temperature %g: want ≥ 0 (0 picks the most likely byte)", temp)
	}
	st, err := stages.LoadModel(ckpt, 1)
	if err != nil {
		return fmt.Errorf("sample: %w", err)
	}
	tok, err := checkpointTokenizer(ckpt, st.Config().VocabSize)
	if err != nil {
		return fmt.Errorf("sample: %w", err)
	}
	prompt := []byte(a.str("prompt", "\n"))
	if len(prompt) == 0 {
		prompt = []byte("\n")
	}
	out, err := stages.Generate(st, tok.encode(prompt), n, temp, topK, uint64(seed))
	if err != nil {
		return fmt.Errorf("sample: %w", err)
	}
	buf, err := tok.decode(out)
	if err != nil {
		return fmt.Errorf("sample: %w", err)
	}
	if !utf8.Valid(buf) {
		buf = []byte(string([]rune(string(buf)))) // show invalid bytes as U+FFFD
	}
	_, err = fmt.Fprintf(stdout, "%s%s\n", prompt, buf)
	return err
}
