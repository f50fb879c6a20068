package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// The tokenizer file is Hugging Face tokenizers' tokenizer.json, as
// Tokenizer.save writes it for a byte-level BPE (GPT-2's
// tokenizer.json has the same shape): version "1.0", the special tokens
// under added_tokens (and in the vocabulary, with the same ids, as the
// BPE trainer puts them), no normalizer, a ByteLevel pre-tokenizer with
// the GPT-2 expression and no prefix space, a ByteLevel decoder, and a
// BPE model whose vocabulary spells each token's bytes with GPT-2's
// byte-to-unicode map and whose merges are "left right" strings in rank
// order. The layout follows tokenizers' Rust serializers
// (tokenizer/serialization.rs, models/bpe/serialization.rs); this
// environment has no tokenizers library to load the file with, so that
// tokenizers.Tokenizer.from_file accepts it is by construction, not tested.

// ErrFormat is wrapped by every error about a tokenizer file this
// package cannot use.
var ErrFormat = errors.New("not a byte-level BPE tokenizer.json")

type hfAddedToken struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type hfByteLevel struct {
	Type           string `json:"type"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	TrimOffsets    bool   `json:"trim_offsets"`
	UseRegex       bool   `json:"use_regex"`
}

type hfFile struct {
	Version       string          `json:"version"`
	Truncation    json.RawMessage `json:"truncation"`
	Padding       json.RawMessage `json:"padding"`
	AddedTokens   []hfAddedToken  `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

// hfModelHead is the BPE model's small fields, in the serializer's order;
// vocab and merges follow, written by hand (the vocabulary in id order).
type hfModelHead struct {
	Type                    string   `json:"type"`
	Dropout                 *float64 `json:"dropout"`
	UnkToken                *string  `json:"unk_token"`
	ContinuingSubwordPrefix string   `json:"continuing_subword_prefix"`
	EndOfWordSuffix         string   `json:"end_of_word_suffix"`
	FuseUnk                 bool     `json:"fuse_unk"`
	ByteFallback            bool     `json:"byte_fallback"`
	IgnoreMerges            bool     `json:"ignore_merges"`
}

type hfModel struct {
	hfModelHead
	Vocab  map[string]int32  `json:"vocab"`
	Merges []json.RawMessage `json:"merges"`
}

func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("tokenizer: encoding %T: %v", v, err)) // only plain structs and strings
	}
	return bytes.TrimRight(b.Bytes(), "\n")
}

// WriteJSON writes the tokenizer in Hugging Face's tokenizer.json format.
func (t *Tokenizer) WriteJSON(w io.Writer) error {
	var b bytes.Buffer
	added := make([]hfAddedToken, 0, len(t.special))
	for _, s := range t.special {
		added = append(added, hfAddedToken{ID: s.ID, Content: s.Content, Special: true})
	}
	null := json.RawMessage("null")
	pre := hfByteLevel{Type: "ByteLevel", AddPrefixSpace: false, TrimOffsets: true, UseRegex: true}
	dec := hfByteLevel{Type: "ByteLevel", AddPrefixSpace: true, TrimOffsets: true, UseRegex: true}
	head := marshal(hfModelHead{Type: "BPE"})
	var m bytes.Buffer
	m.Write(head[:len(head)-1]) // the small fields, without the closing brace
	m.WriteString(`,"vocab":{`)
	for id := range t.tokens {
		if id > 0 {
			m.WriteByte(',')
		}
		m.Write(marshal(t.vocabString(int32(id))))
		fmt.Fprintf(&m, ":%d", id)
	}
	m.WriteString(`},"merges":[`)
	for r, mg := range t.merges {
		if r > 0 {
			m.WriteByte(',')
		}
		m.Write(marshal(t.vocabString(mg[0]) + " " + t.vocabString(mg[1])))
	}
	m.WriteString("]}")
	f := hfFile{Version: "1.0", Truncation: null, Padding: null, AddedTokens: added, Normalizer: null,
		PreTokenizer: marshal(pre), PostProcessor: null, Decoder: marshal(dec), Model: m.Bytes()}
	b.Write(marshal(f))
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// vocabString is token id as the vocabulary spells it: byte-level runes,
// or a special token's text as it is.
func (t *Tokenizer) vocabString(id int32) string {
	for _, s := range t.special {
		if s.ID == id {
			return s.Content
		}
	}
	return byteLevelString(t.tokens[id])
}

// Save writes the tokenizer to path (tokenizer.json) atomically.
func (t *Tokenizer) Save(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save tokenizer: %w", err)
	}
	err = t.WriteJSON(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("save tokenizer %s: %w", path, err)
	}
	return nil
}

// Load reads a tokenizer.json (see ReadJSON).
func Load(path string) (*Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	t, err := ReadJSON(b)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	return t, nil
}

// ReadJSON reads a Hugging Face tokenizer.json of a byte-level BPE: ours,
// or another such as GPT-2's (ids need not put the bytes first). Merges
// may be "left right" strings or [left, right] pairs (tokenizers ≥ 0.20).
// What would encode differently here is refused, naming it: a normalizer,
// another pre-tokenizer or one with add_prefix_space, another model, BPE
// dropout, a missing byte token.
func ReadJSON(data []byte) (*Tokenizer, error) {
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, a...)...)
	}
	if f.Version != "1.0" {
		return nil, bad("version %q, want \"1.0\"", f.Version)
	}
	if n := strings.TrimSpace(string(f.Normalizer)); n != "" && n != "null" {
		return nil, bad("normalizer %s: only none is supported", n)
	}
	var pre hfByteLevel
	if err := json.Unmarshal(f.PreTokenizer, &pre); err != nil || pre.Type != "ByteLevel" || pre.AddPrefixSpace || !pre.UseRegex {
		return nil, bad("pre_tokenizer %s: want ByteLevel with use_regex true and add_prefix_space false", f.PreTokenizer)
	}
	var m hfModel
	if err := json.Unmarshal(f.Model, &m); err != nil {
		return nil, bad("model: %v", err)
	}
	if m.Type != "BPE" || m.Dropout != nil && *m.Dropout != 0 || m.ContinuingSubwordPrefix != "" || m.EndOfWordSuffix != "" || m.ByteFallback || m.IgnoreMerges {
		return nil, bad("model: want type BPE without dropout, subword prefix or suffix, byte_fallback or ignore_merges")
	}
	n := 0 // 1 + the largest id
	for s, id := range m.Vocab {
		if id < 0 || id >= maxVocab {
			return nil, bad("vocab token %q has id %d, outside 0..%d", s, id, maxVocab-1)
		}
		n = max(n, int(id)+1)
	}
	for _, a := range f.AddedTokens {
		if a.ID < 0 || a.ID >= maxVocab {
			return nil, bad("added token %q has id %d, outside 0..%d", a.Content, a.ID, maxVocab-1)
		}
		if id, ok := m.Vocab[a.Content]; ok && id != a.ID {
			return nil, bad("special token %q has id %d in added_tokens but %d in the vocabulary", a.Content, a.ID, id)
		}
		n = max(n, int(a.ID)+1)
	}
	if n == 0 {
		return nil, bad("empty vocabulary")
	}
	tokens := make([][]byte, n)
	special := map[string]int32{}
	var specials []Special
	for _, a := range f.AddedTokens {
		if tokens[a.ID] != nil {
			return nil, bad("added token %q: id %d given twice", a.Content, a.ID)
		}
		special[a.Content] = a.ID
		specials = append(specials, Special{a.ID, a.Content})
		tokens[a.ID] = []byte(a.Content)
	}
	for s, id := range m.Vocab {
		if _, ok := special[s]; ok {
			continue // checked above: the same id
		}
		if tokens[id] != nil {
			return nil, bad("id %d given twice in the vocabulary", id)
		}
		b, ok := byteLevelBytes(s)
		if !ok {
			return nil, bad("vocab token %q is not spelled in GPT-2's byte-level alphabet", s)
		}
		tokens[id] = b
	}
	var byteID [256]int32
	have := [256]bool{}
	for id, b := range tokens {
		if b == nil {
			return nil, bad("no token has id %d", id)
		}
		if len(b) == 1 && !isSpecialID(specials, int32(id)) {
			byteID[b[0]], have[b[0]] = int32(id), true
		}
	}
	for c, ok := range have {
		if !ok {
			return nil, bad("no token for byte 0x%02x: such text could not be encoded", c)
		}
	}
	merges := make([][2]int32, 0, len(m.Merges))
	for r, raw := range m.Merges {
		var l, rt string
		var s string
		var pair []string
		if json.Unmarshal(raw, &s) == nil {
			var ok bool
			if l, rt, ok = strings.Cut(s, " "); !ok {
				return nil, bad("merge %d %q is not \"left right\"", r, s)
			}
		} else if json.Unmarshal(raw, &pair) == nil && len(pair) == 2 {
			l, rt = pair[0], pair[1]
		} else {
			return nil, bad("merge %d: %s is neither \"left right\" nor [left, right]", r, raw)
		}
		a, okA := m.Vocab[l]
		b, okB := m.Vocab[rt]
		if !okA || !okB {
			return nil, bad("merge %d (%q, %q) names a token not in the vocabulary", r, l, rt)
		}
		merges = append(merges, [2]int32{a, b})
	}
	t, err := build(tokens, byteID, merges, specials)
	if err != nil {
		return nil, bad("%v", err)
	}
	return t, nil
}

func isSpecialID(sp []Special, id int32) bool {
	for _, s := range sp {
		if s.ID == id {
			return true
		}
	}
	return false
}
