package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/runtime/trainer"
	"github.com/narrowband/narrowband/stages"
)

// ckptTokenizer is how eval and sample turn text into a checkpoint's ids:
// its run's tokenizer, or bytes (nil).
type ckptTokenizer struct{ f *data.TokenizerFile }

// checkpointTokenizer finds the tokenizer a checkpoint was trained with:
// the tokenizer.json beside it, verified against the sha256 its metadata
// names. A checkpoint that names none (a byte run, or a run from before
// tokenizers) reads bytes.
func checkpointTokenizer(ckpt string, vocab int) (ckptTokenizer, error) {
	_, md, err := stages.ReadSafetensors(ckpt)
	if err != nil {
		return ckptTokenizer{}, err
	}
	want, ok := md[trainer.MetaTokenizer]
	if !ok || want == "bytes" {
		return ckptTokenizer{}, nil
	}
	path := filepath.Join(filepath.Dir(ckpt), data.TokenizerName)
	f, err := data.ReadTokenizer(path)
	if errors.Is(err, os.ErrNotExist) {
		return ckptTokenizer{}, fmt.Errorf("%s was trained with a tokenizer (sha256 %s), but %s is missing: copy the run folder's tokenizer.json beside the checkpoint", ckpt, want, path)
	}
	if err != nil {
		return ckptTokenizer{}, err
	}
	if f.SHA256 != want {
		return ckptTokenizer{}, fmt.Errorf("%s has sha256 %s, but %s was trained with the tokenizer of sha256 %s: put the run's own tokenizer.json beside it", path, f.SHA256, ckpt, want)
	}
	if f.VocabSize() != vocab {
		return ckptTokenizer{}, fmt.Errorf("%s has %d tokens but %s's model has a vocabulary of %d", path, f.VocabSize(), ckpt, vocab)
	}
	return ckptTokenizer{f}, nil
}

func (t ckptTokenizer) encode(text []byte) []int32 {
	if t.f == nil {
		ids := make([]int32, len(text))
		for i, b := range text {
			ids[i] = int32(b)
		}
		return ids
	}
	return t.f.Encode(text)
}

func (t ckptTokenizer) decode(ids []int32) ([]byte, error) {
	if t.f == nil {
		b := make([]byte, len(ids))
		for i, id := range ids {
			b[i] = byte(id)
		}
		return b, nil
	}
	return t.f.Decode(ids)
}

// bytes is the length of id's text.
func (t ckptTokenizer) bytes(id int32) int {
	if t.f == nil {
		return 1
	}
	return len(t.f.Token(id))
}

func (t ckptTokenizer) name() string {
	if t.f == nil {
		return "bytes"
	}
	return t.f.SHA256
}
