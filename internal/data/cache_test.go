package data

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/tokenizer"
)

// legacyLoad is the byte corpus as Load read it before tokenizers and
// manifests (the file and folder cases, kept here as the reference):
// the byte path must give exactly these streams.
func legacyLoad(t *testing.T, path string, goSrc bool, exts []string, frac float64, minBytes int) (train, val []byte) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsDir() {
		b, _ := os.ReadFile(path)
		nVal := max(int(float64(len(b))*frac), minBytes)
		return b[:len(b)-nVal], b[len(b)-nVal:]
	}
	var files []string
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if goSrc && p != path && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || (goSrc && strings.HasSuffix(d.Name(), "_test.go")) {
			return nil
		}
		ok := len(exts) == 0
		for _, e := range exts {
			ok = ok || strings.HasSuffix(d.Name(), e)
		}
		if ok {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	for _, f := range files {
		rel, _ := filepath.Rel(path, f)
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(filepath.ToSlash(rel)))
		if float64(h.Sum64()%1_000_000) < frac*1_000_000 {
			val = append(val, b...)
		} else {
			train = append(train, b...)
		}
	}
	if len(val) < minBytes {
		n := max(int(float64(len(train))*frac), minBytes)
		val = append(val, train[len(train)-n:]...)
		train = train[:len(train)-n]
	}
	return train, val
}

func TestBytePathUnchanged(t *testing.T) {
	src := filepath.Join(GoRoot(), "src")
	one := filepath.Join(src, "strings", "strings.go")
	cases := []struct {
		name  string
		o     Options
		path  string
		goSrc bool
		exts  []string
	}{
		{"the default corpus", Options{ValFraction: 0.01, MinTokens: 129}, src, true, []string{".go"}},
		{"a folder", Options{Paths: []string{filepath.Join(src, "strings")}, ValFraction: 0.2, MinTokens: 129}, filepath.Join(src, "strings"), false, nil},
		{"a folder, by extension, split by its tail", Options{Paths: []string{filepath.Join(src, "unicode")}, Extensions: []string{".go"}, ValFraction: 0.01, MinTokens: 129}, filepath.Join(src, "unicode"), false, []string{".go"}},
		{"one file", Options{Paths: []string{one}, ValFraction: 0.1, MinTokens: 129}, one, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(context.Background(), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			train, val := legacyLoad(t, tc.path, tc.goSrc, tc.exts, tc.o.ValFraction, tc.o.MinTokens)
			if string(c.Train.Raw()) != string(train) || string(c.Val.Raw()) != string(val) || c.Train.Width() != 1 {
				t.Fatalf("train %d bytes, held out %d; before tokenizers %d and %d", c.Train.Len(), c.Val.Len(), len(train), len(val))
			}
			if c.Cache != "" {
				t.Errorf("a byte corpus wrote a token cache %s", c.Cache)
			}
		})
	}
}

// smallTokenizer is a BPE of vocab ids trained on docs.
func smallTokenizer(t *testing.T, docs []string, vocab int) (*tokenizer.Tokenizer, string) {
	t.Helper()
	var b [][]byte
	for _, d := range docs {
		b = append(b, []byte(d))
	}
	tk, _, err := tokenizer.Train(context.Background(), b, tokenizer.DefaultTrainConfig(vocab))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := tk.Save(p); err != nil {
		t.Fatal(err)
	}
	f, err := ReadTokenizer(p)
	if err != nil {
		t.Fatal(err)
	}
	return f.Tokenizer, f.SHA256
}

func TestTokenCache(t *testing.T) {
	files := map[string]string{}
	var docs []string
	for i := range 40 {
		d := fmt.Sprintf("func f%d(x int) int { return x * %d } // %s\n", i, i, strings.Repeat("the quick brown fox ", i%7+1))
		files[fmt.Sprintf("f%02d.go", i)] = d
		docs = append(docs, d)
	}
	dir := write(t, t.TempDir(), files)
	tk, hash := smallTokenizer(t, docs, 300)
	cache := t.TempDir()
	o := Options{Paths: []string{dir}, ValFraction: 0.2, MinTokens: 32, Tokenizer: tk, TokenizerHash: hash, CacheDir: cache}
	load := func(o Options) *Corpus {
		t.Helper()
		c, err := Load(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first := load(o)
	if first.CacheHit || first.Cache == "" || first.Vocab != tk.VocabSize() || first.Train.Width() != 2 {
		t.Fatalf("first load: hit %v, cache %q, vocab %d, width %d", first.CacheHit, first.Cache, first.Vocab, first.Train.Width())
	}
	// The ids are the tokenizer's encoding of each document, end to end.
	var want []int32
	for _, f := range first.Manifest.Files {
		if f.ValDocuments == 0 {
			want = tk.AppendEncode(want, []byte(files[f.Name]))
		}
	}
	got := make([]int32, first.Train.Len())
	first.Train.Window(got, 0)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatal("the training ids are not the documents' encodings in order")
	}
	var nb int
	for _, id := range got {
		nb += first.TokenBytes(id)
	}
	if int64(nb) != first.Manifest.TrainBytes {
		t.Errorf("the training ids cover %d bytes, the manifest counts %d", nb, first.Manifest.TrainBytes)
	}

	second := load(o)
	if !second.CacheHit || second.Cache != first.Cache || string(second.Train.Raw()) != string(first.Train.Raw()) || string(second.Val.Raw()) != string(first.Val.Raw()) {
		t.Fatalf("second load: hit %v, %q; the streams must be the first's", second.CacheHit, second.Cache)
	}

	corrupt := map[string]func(b []byte) []byte{
		"a flipped bit": func(b []byte) []byte { b[len(b)/2] ^= 4; return b },
		"truncated":     func(b []byte) []byte { return b[:len(b)-3] },
		"no header":     func(b []byte) []byte { return b[:10] },
		"empty":         func(b []byte) []byte { return nil },
	}
	for name, spoil := range corrupt {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(first.Cache)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(first.Cache, spoil(b), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := openCache(first.Cache, cacheKey(first.Manifest.Hash, hash), 2); !errors.Is(err, ErrCache) {
				t.Errorf("the spoilt cache opens: %v", err)
			}
			c := load(o)
			if c.CacheHit || len(c.Warnings) == 0 || string(c.Train.Raw()) != string(first.Train.Raw()) {
				t.Fatalf("a spoilt cache: hit %v, warnings %v; want it rebuilt, with the same ids", c.CacheHit, c.Warnings)
			}
			if c := load(o); !c.CacheHit {
				t.Fatal("the rebuilt cache is not used by the next load")
			}
		})
	}

	// Another tokenizer: another cache, never the first one's ids.
	tk2, hash2 := smallTokenizer(t, docs[:10], 270)
	o2 := o
	o2.Tokenizer, o2.TokenizerHash = tk2, hash2
	other := load(o2)
	if other.CacheHit || other.Cache == first.Cache || other.Vocab != tk2.VocabSize() || hash2 == hash {
		t.Fatalf("another tokenizer: hit %v, cache %q (the first was %q)", other.CacheHit, other.Cache, first.Cache)
	}
	// Another corpus: a changed file is a new cache too.
	os.WriteFile(filepath.Join(dir, "f00.go"), []byte("package changed\n"), 0o644)
	if c := load(o); c.CacheHit || c.Cache == first.Cache {
		t.Fatalf("a changed corpus: hit %v, cache %q", c.CacheHit, c.Cache)
	}
	// No writable cache folder: the run goes on, encoding in memory.
	ro := filepath.Join(t.TempDir(), "file")
	os.WriteFile(ro, nil, 0o644)
	o3 := o
	o3.CacheDir = filepath.Join(ro, "cache")
	if c := load(o3); c.Cache != "" || len(c.Warnings) == 0 || c.Train.Len() == 0 {
		t.Fatalf("an unusable cache folder: cache %q, warnings %v", c.Cache, c.Warnings)
	}
}

// TestTokenizedLoadDoesNotHoldTheText: the bound on what is held applies
// to a byte corpus's text, but to a tokenized corpus's ids (encoded in
// batches, the text never held whole), and not at all to ids mapped from
// the cache.
func TestTokenizedLoadDoesNotHoldTheText(t *testing.T) {
	files := map[string]string{}
	var docs []string
	for i := range 30 {
		d := strings.Repeat(fmt.Sprintf("the quick brown fox %d jumps over the lazy dog. ", i%3), 40)
		files[fmt.Sprintf("f%02d.txt", i)] = d
		docs = append(docs, d)
	}
	dir := write(t, t.TempDir(), files)
	var text int64
	for _, d := range docs {
		text += int64(len(d))
	}
	tk, hash := smallTokenizer(t, docs, 300)
	o := Options{Paths: []string{dir}, ValFraction: 0.2, MinTokens: 32, MaxBytes: text / 2}
	if _, err := Load(context.Background(), o); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a byte corpus of %d bytes under max_bytes %d: %v, want ErrTooLarge", text, o.MaxBytes, err)
	}
	o.Tokenizer, o.TokenizerHash, o.CacheDir = tk, hash, t.TempDir()
	c, err := Load(context.Background(), o)
	if err != nil {
		t.Fatalf("tokenized, its ids under max_bytes: %v", err)
	}
	if ids := int64(len(c.Train.Raw()) + len(c.Val.Raw())); ids > o.MaxBytes {
		t.Fatalf("%d bytes of ids, over the bound of %d", ids, o.MaxBytes)
	}
	c.Close()
	o.MaxBytes = 8
	if c, err := Load(context.Background(), o); err != nil || !c.CacheHit {
		t.Fatalf("ids mapped from the cache are not bounded: %v", err)
	} else {
		c.Close()
	}
	o.CacheDir = t.TempDir()
	if _, err := Load(context.Background(), o); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ids over max_bytes: %v, want ErrTooLarge", err)
	}
}

// FuzzCacheFile: whatever a cache file holds, opening it never panics, and
// what it accepts is a file whose header, length and checksum agree.
func FuzzCacheFile(f *testing.F) {
	key := cacheKey("manifest", "tokenizer")
	good := make([]byte, cacheHeader+2*7)
	for i := cacheHeader; i < len(good); i++ {
		good[i] = byte(i)
	}
	putHeader(good, key, 2, 4, 3, 1, 1)
	f.Add(good)
	f.Add(good[:cacheHeader])
	f.Add([]byte(cacheMagic))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "c.tokens")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		train, val, unmap, err := openCache(p, key, 2)
		if err != nil {
			if len(b) > 0 && !errors.Is(err, ErrCache) {
				t.Fatalf("error %v is not ErrCache", err)
			}
			return
		}
		defer unmap()
		if cacheHeader+2*(train.Len()+val.Len()) != len(b) {
			t.Fatalf("accepted %d + %d ids from %d bytes", train.Len(), val.Len(), len(b))
		}
	})
}
