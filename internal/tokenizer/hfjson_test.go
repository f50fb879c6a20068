package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestJSONRoundTrip(t *testing.T) {
	tok := trained(t)
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := tok.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.VocabSize() != tok.VocabSize() || back.NumMerges() != tok.NumMerges() || fmt.Sprint(back.Special()) != fmt.Sprint(tok.Special()) {
		t.Fatalf("loaded %d tokens, %d merges, %v; saved %d, %d, %v", back.VocabSize(), back.NumMerges(), back.Special(),
			tok.VocabSize(), tok.NumMerges(), tok.Special())
	}
	for id := range tok.VocabSize() {
		if !bytes.Equal(back.Token(int32(id)), tok.Token(int32(id))) {
			t.Fatalf("token %d: %q loaded, %q saved", id, back.Token(int32(id)), tok.Token(int32(id)))
		}
	}
	text := bytes.Join(sampleCorpus()[:5], nil)
	if !equalIDs(back.Encode(text), tok.Encode(text)) {
		t.Error("the loaded tokenizer encodes differently")
	}
	if !bytes.Equal(mustJSON(t, back), mustJSON(t, tok)) {
		t.Error("saving the loaded tokenizer gives another file")
	}
}

// The file has Hugging Face's layout: its keys in the serializers'
// order, the vocabulary in id order spelled in GPT-2's byte alphabet, the
// special token in both the vocabulary and added_tokens with one id,
// merges as "left right".
func TestJSONLayout(t *testing.T) {
	tok := trained(t)
	js := mustJSON(t, tok)
	keys := func(raw []byte) []string {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.Token()
		var ks []string
		for dec.More() {
			k, _ := dec.Token()
			ks = append(ks, k.(string))
			var skip json.RawMessage
			dec.Decode(&skip)
		}
		return ks
	}
	if got := strings.Join(keys(js), " "); got != "version truncation padding added_tokens normalizer pre_tokenizer post_processor decoder model" {
		t.Errorf("top-level keys %s", got)
	}
	var f struct {
		Version     string
		AddedTokens []hfAddedToken `json:"added_tokens"`
		PreTok      hfByteLevel    `json:"pre_tokenizer"`
		Decoder     hfByteLevel    `json:"decoder"`
		Model       json.RawMessage
	}
	if err := json.Unmarshal(js, &f); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys(f.Model), " "); got != "type dropout unk_token continuing_subword_prefix end_of_word_suffix fuse_unk byte_fallback ignore_merges vocab merges" {
		t.Errorf("model keys %s", got)
	}
	if f.Version != "1.0" || f.PreTok != (hfByteLevel{"ByteLevel", false, true, true}) || f.Decoder != (hfByteLevel{"ByteLevel", true, true, true}) {
		t.Errorf("version %q, pre_tokenizer %+v, decoder %+v", f.Version, f.PreTok, f.Decoder)
	}
	var m struct {
		Type   string
		Vocab  map[string]int32
		Merges []string
	}
	json.Unmarshal(f.Model, &m)
	eot := int32(tok.VocabSize() - 1)
	if len(f.AddedTokens) != 1 || f.AddedTokens[0] != (hfAddedToken{ID: eot, Content: EndOfText, Special: true}) || m.Vocab[EndOfText] != eot {
		t.Errorf("added tokens %+v, vocab id of %s %d", f.AddedTokens, EndOfText, m.Vocab[EndOfText])
	}
	if m.Type != "BPE" || len(m.Vocab) != tok.VocabSize() || len(m.Merges) != tok.NumMerges() {
		t.Errorf("model %s, %d vocab, %d merges", m.Type, len(m.Vocab), len(m.Merges))
	}
	for s, id := range map[string]int32{"Ġ": ' ', "Ċ": '\n', "ĉ": '\t', "a": 'a', "Ā": 0, "ÿ": 0xff} {
		if m.Vocab[s] != id {
			t.Errorf("vocab[%q] = %d, want %d", s, m.Vocab[s], id)
		}
	}
	// The vocabulary object lists ids in order (as OrderedVocabIter).
	dec := json.NewDecoder(bytes.NewReader(f.Model))
	for tk, _ := dec.Token(); tk != "vocab"; tk, _ = dec.Token() {
	}
	dec.Token()
	for want := int32(0); dec.More(); want++ {
		dec.Token()
		var id int32
		dec.Decode(&id)
		if id != want {
			t.Fatalf("vocabulary entry %d has id %d", want, id)
		}
	}
	for _, mg := range m.Merges {
		if strings.Count(mg, " ") != 1 {
			t.Fatalf("merge %q is not two tokens and one space", mg)
		}
	}
}

// A byte-level BPE file from elsewhere: bytes not first (GPT-2 numbers its
// byte tokens in rune order), merges as [left, right] pairs (tokenizers ≥
// 0.20), a special token only in added_tokens.
func TestReadJSONForeign(t *testing.T) {
	var runes []string
	for _, r := range byteRune {
		runes = append(runes, string(r))
	}
	sort.Strings(runes)
	vocab := map[string]int{} // id 0 is the added <pad>, then the bytes in rune order
	for i, r := range runes {
		vocab[r] = i + 1
	}
	vocab["ll"], vocab["he"], vocab["hell"], vocab["Ġhe"] = 257, 258, 259, 260
	file := map[string]any{
		"version": "1.0", "added_tokens": []any{map[string]any{"id": 0, "content": "<pad>", "special": true}},
		"normalizer": nil, "pre_tokenizer": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
		"decoder": map[string]any{"type": "ByteLevel"},
		"model":   map[string]any{"type": "BPE", "vocab": vocab, "merges": []any{[]string{"l", "l"}, []string{"h", "e"}, "he ll", "Ġ he"}},
	}
	js, _ := json.Marshal(file)
	tok, err := ReadJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode([]byte("hello he"))
	want := []int32{int32(vocab["hell"]), int32(vocab["o"]), int32(vocab["Ġhe"])}
	if !equalIDs(ids, want) {
		t.Errorf("hello he: %v, want %v", ids, want)
	}
	if b, _ := tok.Decode(append(ids, 0)); string(b) != "hello he<pad>" {
		t.Errorf("decode: %q", b)
	}
}

func TestReadJSONErrors(t *testing.T) {
	good := mustJSON(t, trained(t))
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	model := func(m map[string]any) map[string]any { return m["model"].(map[string]any) }
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"not json", []byte("{"), "unexpected end"},
		{"version", edit(func(m map[string]any) { m["version"] = "2.0" }), "version"},
		{"normalizer", edit(func(m map[string]any) { m["normalizer"] = map[string]any{"type": "NFC"} }), "normalizer"},
		{"prefix space", edit(func(m map[string]any) { m["pre_tokenizer"].(map[string]any)["add_prefix_space"] = true }), "pre_tokenizer"},
		{"wordpiece", edit(func(m map[string]any) { model(m)["type"] = "WordPiece" }), "model"},
		{"dropout", edit(func(m map[string]any) { model(m)["dropout"] = 0.1 }), "model"},
		{"missing byte", edit(func(m map[string]any) { renameToken(model(m), "Ā", "ĀĀĀ") }), "no token for byte 0x00"},
		{"hole", edit(func(m map[string]any) { delete(model(m)["vocab"].(map[string]any), "Ā") }), "no token has id 0"},
		{"bad spelling", edit(func(m map[string]any) { renameToken(model(m), "ĀĀ", "一") }), "alphabet"},
		{"bad merge", edit(func(m map[string]any) { model(m)["merges"] = []any{"nosuch token"} }), "merge 0"},
		{"merge without result", edit(func(m map[string]any) { model(m)["merges"] = []any{"Ā Ā"} }), "lacks the merged token"},
		{"special id clash", edit(func(m map[string]any) { m["added_tokens"].([]any)[0].(map[string]any)["id"] = 3 }), "special token"},
	} {
		_, err := ReadJSON(c.data)
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrFormat mentioning %q", c.name, err, c.want)
		}
	}
}

// renameToken gives the vocabulary entry from the key to; the id stays.
func renameToken(model map[string]any, from, to string) {
	v := model["vocab"].(map[string]any)
	if id, ok := v[from]; ok {
		delete(v, from)
		v[to] = id
		return
	}
	// from is not in the vocabulary: take any multi-byte token's id.
	for k, id := range v {
		if len([]rune(k)) > 1 && k != EndOfText {
			delete(v, k)
			v[to] = id
			return
		}
	}
}
