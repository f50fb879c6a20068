package config

import (
	"fmt"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/tokenizer"
)

// maxVocab bounds model.vocab_size with a tokenizer: ids travel as
// uint32 at most, and the embedding table must fit.
const maxVocab = 1 << 20

// CheckTokenizer reads data.tokenizer (if it is a file) and checks that
// model.vocab_size equals its vocabulary. Equal, not at least: the ids are
// the tokenizer's, so a larger table only holds rows no input uses that the
// softmax still gives probability to, and a smaller one cannot embed them.
// LoadRun makes it, apart from Validate because it reads a file: workers
// validate the config they are sent, and the file is the coordinator's.
func (c Config) CheckTokenizer() error {
	if c.Data.Bytes() {
		return nil
	}
	tk, err := tokenizer.Load(c.Data.Tokenizer)
	if err != nil {
		return &compression.KeyError{Key: "data.tokenizer", Value: fmt.Sprintf("%q", c.Data.Tokenizer),
			Allowed: fmt.Sprintf("must be \"bytes\" or a tokenizer.json from narrowband tokenizer train (%v)", err)}
	}
	if v := tk.VocabSize(); c.Model.VocabSize != v {
		return &compression.KeyError{Key: "model.vocab_size", Value: c.Model.VocabSize,
			Allowed: fmt.Sprintf("must equal the vocabulary of data.tokenizer (%s has %d tokens): set model.vocab_size = %d", c.Data.Tokenizer, v, v)}
	}
	return nil
}
