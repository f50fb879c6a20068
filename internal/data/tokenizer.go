package data

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/narrowband/narrowband/internal/tokenizer"
)

// TokenizerName is the tokenizer's file in a run folder, beside the
// checkpoint it encodes for.
const TokenizerName = "tokenizer.json"

// TokenizerFile is a tokenizer.json read whole: parsed, with its bytes
// (copied into the run folder as they are) and their sha256 (named in
// checkpoints, and keying the token cache).
type TokenizerFile struct {
	*tokenizer.Tokenizer
	JSON   []byte
	SHA256 string
}

// ReadTokenizer reads a tokenizer.json.
func ReadTokenizer(path string) (*TokenizerFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	tk, err := tokenizer.ReadJSON(b)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	sum := sha256.Sum256(b)
	return &TokenizerFile{Tokenizer: tk, JSON: b, SHA256: hex.EncodeToString(sum[:])}, nil
}
