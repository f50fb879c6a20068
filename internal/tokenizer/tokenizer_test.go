package tokenizer

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// sampleCorpus is a few hundred KB of the Go standard library's source
// (the project's default data), read once.
var sampleCorpus = sync.OnceValue(func() [][]byte {
	files, err := ListFiles([]string{filepath.Join(runtime.GOROOT(), "src", "strings"), filepath.Join(runtime.GOROOT(), "src", "bufio")}, ".go")
	if err != nil {
		panic(err)
	}
	docs, err := ReadFiles(files)
	if err != nil {
		panic(err)
	}
	return docs
})

var sampleTokenizer = sync.OnceValues(func() (*Tokenizer, error) {
	t, _, err := Train(context.Background(), sampleCorpus(), DefaultTrainConfig(1024))
	return t, err
})

func trained(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := sampleTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func roundTrip(t testing.TB, tok *Tokenizer, text []byte) []int32 {
	t.Helper()
	ids := tok.Encode(text)
	back, err := tok.Decode(ids)
	if err != nil {
		t.Fatalf("%q: decode: %v", text, err)
	}
	if !bytes.Equal(back, text) {
		t.Fatalf("%q: decodes to %q", text, back)
	}
	return ids
}

func TestRoundTrip(t *testing.T) {
	tok := trained(t)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, c := range []struct {
		name string
		text string
	}{
		{"empty", ""},
		{"one byte", "x"},
		{"every byte", string(all)},
		{"every byte reversed", string(bytes.Repeat([]byte{0xff, 0x80, 0x00, 0x7f}, 64))},
		{"invalid utf-8", "\xff\xfe\xfd abc \xc3\x28 \xe2\x82 \xf0\x9f\x98"},
		{"lone continuation bytes", "\x80\x81\xbf"},
		{"unicode", "héllo wörld, 日本語, emoji 🙂, Ⅻ ½"},
		{"code", "func main() {\n\tfmt.Println(\"hello\")\n}\n"},
		{"spaces", strings.Repeat(" ", 100000)},
		{"spaces then word", strings.Repeat(" ", 5000) + "word"},
		{"newlines and tabs", strings.Repeat("\n\t \r\n", 3000)},
		{"long identifier", strings.Repeat("abcdefghij", 10000)},
		{"long punctuation", strings.Repeat("!=(){}[];", 5000)},
		{"special token text", "before " + EndOfText + " after"},
		{"contractions", "don't you'll we've I'm 'd"},
	} {
		ids := roundTrip(t, tok, []byte(c.text))
		if len(c.text) > 0 && len(ids) == 0 {
			t.Errorf("%s: no tokens", c.name)
		}
		for _, id := range ids {
			if id == int32(tok.VocabSize()-1) {
				t.Errorf("%s: ordinary text encoded to the special token", c.name)
			}
		}
	}
	if _, err := tok.Decode([]int32{0, int32(tok.VocabSize())}); err == nil {
		t.Error("an id past the vocabulary decoded")
	}
	if _, err := tok.Decode([]int32{-1}); err == nil {
		t.Error("a negative id decoded")
	}
	eot, ok := tok.SpecialID(EndOfText)
	if b, _ := tok.Decode([]int32{eot}); !ok || string(b) != EndOfText || eot != int32(tok.VocabSize()-1) {
		t.Errorf("end of text: id %d (%v) decodes to %q", eot, ok, b)
	}
}

// Long runs take n·log n: a megabyte of one space-free piece encodes
// quickly (the quadratic loop would take minutes).
func TestEncodeLongPiece(t *testing.T) {
	tok := trained(t)
	text := bytes.Repeat([]byte("a"), 1<<20)
	ids := roundTrip(t, tok, text)
	if len(ids) > len(text)/2 {
		t.Errorf("%d tokens for %d a's: the merges of \"aa\" were not used", len(ids), len(text))
	}
}

func FuzzRoundTrip(f *testing.F) {
	tok := trained(f)
	for _, s := range []string{"", "hello world", "\xff\x00\x80", "  \n\n\t x := 1\n", strings.Repeat("ab", 50), EndOfText} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		ids := roundTrip(t, tok, text)
		// The cached, priority-queue encoding is GPT-2's reference BPE.
		var want []int32
		splitPieces(text, func(p []byte) { want = append(want, naiveBPE(tok, p)...) })
		if !equalIDs(ids, want) {
			t.Fatalf("%q: encoding %v, reference BPE %v", text, ids, want)
		}
	})
}

func mustJSON(t testing.TB, tok *Tokenizer) []byte {
	var b bytes.Buffer
	if err := tok.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// naiveBPE is GPT-2's encoder.py bpe(): while some adjacent pair has a
// merge, take the lowest-ranked one and merge all its occurrences left to
// right.
func naiveBPE(tok *Tokenizer, piece []byte) []int32 {
	var w []int32
	for _, c := range piece {
		w = append(w, tok.byteID[c])
	}
	for len(w) > 1 {
		best, bestRank := -1, int32(1<<30)
		for i := 0; i+1 < len(w); i++ {
			if m, ok := tok.ranks[pairOf(w[i], w[i+1])]; ok && m.rank < bestRank {
				best, bestRank = i, m.rank
			}
		}
		if best < 0 {
			break
		}
		a, b := w[best], w[best+1]
		m := tok.ranks[pairOf(a, b)]
		var out []int32
		for i := 0; i < len(w); i++ {
			if i+1 < len(w) && w[i] == a && w[i+1] == b {
				out = append(out, m.id)
				i++
			} else {
				out = append(out, w[i])
			}
		}
		w = out
	}
	return w
}

// The priority-queue merge gives GPT-2's reference segmentation, piece by
// piece, on held-out source and random bytes.
func TestEncodeMatchesNaiveBPE(t *testing.T) {
	tok := trained(t)
	src, err := os.ReadFile(filepath.Join(runtime.GOROOT(), "src", "fmt", "print.go"))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	noise := make([]byte, 20000)
	for i := range noise {
		noise[i] = "ab \n\tx(){}.'s0é"[r.IntN(16)]
	}
	for _, text := range [][]byte{src, noise} {
		var want []int32
		splitPieces(text, func(p []byte) { want = append(want, naiveBPE(tok, p)...) })
		if got := tok.Encode(text); !equalIDs(got, want) {
			t.Fatalf("encoding differs from the reference BPE (%d vs %d tokens)", len(got), len(want))
		}
	}
}

// Same corpus, same merges: whatever the number of counting goroutines
// and whichever order the maps are walked in.
func TestTrainDeterministic(t *testing.T) {
	docs := sampleCorpus()
	var first []byte
	for _, workers := range []int{1, 2, 3, 1} {
		cfg := DefaultTrainConfig(700)
		cfg.Workers = workers
		tok, _, err := Train(context.Background(), docs, cfg)
		if err != nil {
			t.Fatal(err)
		}
		js := mustJSON(t, tok)
		if first == nil {
			first = js
		} else if !bytes.Equal(js, first) {
			t.Fatalf("workers=%d: a different tokenizer from the same corpus", workers)
		}
	}
}

// Merges on a corpus small enough to count by hand, and what the counts
// and ties decide.
func TestTrainKnownMerges(t *testing.T) {
	// Pieces: "aaa" ×1, " aa" ×2, " aaa" ×2, " ab" ×1 (the space leads).
	docs := [][]byte{[]byte("aaa aa aaa aa aaa ab")}
	cfg := TrainConfig{VocabSize: 256 + 3, MinFrequency: 1}
	tok, st, err := Train(context.Background(), docs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range tok.merges {
		got = append(got, string(tok.Token(m[0]))+"+"+string(tok.Token(m[1])))
	}
	// (a,a) 2 + 2·1 + 2·2 = 8 → "aa"; then (" ","aa") 2 + 2 = 4 beats
	// ("aa",a) 1 + 2 = 3 → " aa"; then (" aa",a) 2 beats ("aa",a) 1.
	want := []string{"a+a", " +aa", " aa+a"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("merges %q, want %q", got, want)
	}
	if st.Words != 4 || st.Pieces != 6 || st.Merges != 3 || tok.VocabSize() != 259 {
		t.Errorf("stats %+v, vocab %d", st, tok.VocabSize())
	}
	// With MinFrequency 3 only the first two merges are frequent enough.
	cfg.MinFrequency = 3
	tok, st, _ = Train(context.Background(), docs, cfg)
	if tok.NumMerges() != 2 || !st.StoppedEarly {
		t.Errorf("min frequency 3: %d merges, stopped early %v", tok.NumMerges(), st.StoppedEarly)
	}
}

// Counting a long document in 1 MiB parts cut at newlines gives the
// counts of the whole document.
func TestCountPiecesChunked(t *testing.T) {
	var b bytes.Buffer
	r := rand.New(rand.NewPCG(3, 4))
	words := []string{"func", " x", "  ", "\n", "\n\n", "\t", " \n", "(", ")", "'s", " 123", "é"}
	for b.Len() < 3<<20 {
		b.WriteString(words[r.IntN(len(words))])
	}
	doc := b.Bytes()
	got, n, err := countPieces(context.Background(), [][]byte{doc}, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	var wn int64
	splitPieces(doc, func(p []byte) { want[string(p)]++; wn++ })
	if n != wn || len(got) != len(want) {
		t.Fatalf("%d pieces, %d distinct; whole document: %d, %d", n, len(got), wn, len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("piece %q counted %d times, %d in the whole document", k, got[k], v)
		}
	}
}

func TestTrainConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  TrainConfig
		want string
	}{
		{TrainConfig{VocabSize: 100}, "vocab size 100"},
		{DefaultTrainConfig(256), "vocab size 256"},
		{TrainConfig{VocabSize: 300, MinFrequency: -1}, "min frequency"},
		{TrainConfig{VocabSize: 300, SpecialTokens: []string{"x", "x"}}, "special token"},
		{TrainConfig{VocabSize: 300, Workers: -2}, "workers"},
	} {
		if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Train(ctx, sampleCorpus(), DefaultTrainConfig(1000)); err == nil {
		t.Error("training with a cancelled context succeeded")
	}
}

func TestListFiles(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "b", "c"), 0o755)
	for _, f := range []string{"a.go", "b/x.txt", "b/c/y.go"} {
		os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
	}
	os.Symlink(filepath.Join(dir, "a.go"), filepath.Join(dir, "b", "link.go"))
	got, err := ListFiles([]string{dir, filepath.Join(dir, "b", "x.txt")})
	if err != nil {
		t.Fatal(err)
	}
	rel := func(fs []string) string {
		var out []string
		for _, f := range fs {
			r, _ := filepath.Rel(dir, f)
			out = append(out, r)
		}
		return strings.Join(out, " ")
	}
	if want := "a.go b/c/y.go b/x.txt b/x.txt"; rel(got) != want {
		t.Errorf("files %q, want %q", rel(got), want)
	}
	got, _ = ListFiles([]string{dir}, ".go")
	if want := "a.go b/c/y.go"; rel(got) != want {
		t.Errorf("with .go: %q, want %q", rel(got), want)
	}
	if _, err := ListFiles([]string{filepath.Join(dir, "missing")}); err == nil {
		t.Error("a missing path listed")
	}
}
