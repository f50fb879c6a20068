package data

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// write makes files under dir (name → content) and returns dir.
func write(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	for name, text := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// names lists the manifest's files by name below their folder.
func names(c *Corpus) []string {
	var out []string
	for _, f := range c.Manifest.Files {
		out = append(out, f.Name)
	}
	sort.Strings(out)
	return out
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func doc(name string) string { return strings.Repeat(name+" says hello. ", 20) }

func TestSourcesGlobsFoldersFilters(t *testing.T) {
	dir := write(t, t.TempDir(), map[string]string{
		"a.md": doc("a"), "b.txt": doc("b"), "sub/c.md": doc("c"), "sub/deep/d.md": doc("d"),
		"vendor/e.md": doc("e"), "sub/f.min.js": doc("f"),
	})
	j := func(s string) string { return filepath.Join(dir, s) }
	cases := []struct {
		name  string
		o     Options
		want  []string
		files int
	}{
		{"folder", Options{Paths: []string{dir}}, []string{"a.md", "b.txt", "sub/c.md", "sub/deep/d.md", "sub/f.min.js", "vendor/e.md"}, 6},
		{"glob one level", Options{Paths: []string{j("*.md")}}, []string{"a.md"}, 1},
		{"glob any depth", Options{Paths: []string{j("**/*.md")}}, []string{"a.md", "sub/c.md", "sub/deep/d.md", "vendor/e.md"}, 4},
		{"glob below a folder", Options{Paths: []string{j("sub/**/*.md")}}, []string{"c.md", "deep/d.md"}, 2},
		{"extensions", Options{Paths: []string{dir}, Extensions: []string{".md"}}, []string{"a.md", "sub/c.md", "sub/deep/d.md", "vendor/e.md"}, 4},
		{"include by name", Options{Paths: []string{dir}, Include: []string{"*.txt", "*.js"}}, []string{"b.txt", "sub/f.min.js"}, 2},
		{"exclude a folder and a name", Options{Paths: []string{dir}, Exclude: []string{"vendor", "*.min.js"}}, []string{"a.md", "b.txt", "sub/c.md", "sub/deep/d.md"}, 4},
		{"exclude by path", Options{Paths: []string{dir}, Exclude: []string{"sub/**"}}, []string{"a.md", "b.txt", "vendor/e.md"}, 3},
		{"a list, each file once", Options{Paths: []string{j("a.md"), dir, j("b.txt")}, Include: []string{"*.md"}}, []string{"a.md", "b.txt", "sub/c.md", "sub/deep/d.md", "vendor/e.md"}, 5},
		{"a named file ignores filters", Options{Paths: []string{j("b.txt"), j("a.md")}, Include: []string{"*.md"}}, []string{"a.md", "b.txt"}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.ValFraction, tc.o.MinTokens = 0.2, 16
			c, err := Load(context.Background(), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(c); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("files %v, want %v", got, tc.want)
			}
			var bytes int64
			for _, f := range c.Manifest.Files {
				bytes += f.Size
			}
			if got := int64(c.Train.Len() + c.Val.Len()); got != bytes || c.TrainDocs+c.ValDocs != tc.files {
				t.Errorf("%d tokens in %d documents, want %d in %d", got, c.TrainDocs+c.ValDocs, bytes, tc.files)
			}
		})
	}
	for _, bad := range []Options{
		{Paths: []string{j("*.rst")}},
		{Paths: []string{filepath.Join(dir, "nope", "*.md")}},
		{Paths: []string{dir}, Include: []string{"[z"}},
	} {
		bad.ValFraction, bad.MinTokens = 0.2, 16
		if _, err := Load(context.Background(), bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestJSONLDocumentsAndErrors(t *testing.T) {
	var lines []string
	for i := range 50 {
		rec, _ := json.Marshal(map[string]any{"id": i, "text": doc(fmt.Sprint("record ", i)), "meta": map[string]int{"n": i}})
		lines = append(lines, string(rec))
	}
	dir := write(t, t.TempDir(), map[string]string{
		"part1.jsonl": strings.Join(lines[:25], "\n") + "\n\n",
		"part2.jsonl": strings.Join(lines[25:], "\r\n"),
		"notes.txt":   doc("notes"),
	})
	c, err := Load(context.Background(), Options{Paths: []string{dir}, ValFraction: 0.2, MinTokens: 64})
	if err != nil {
		t.Fatal(err)
	}
	if c.TrainDocs+c.ValDocs != 51 || c.ValDocs == 0 || c.TrainDocs == 0 {
		t.Errorf("%d + %d documents, want 50 records and a file, on both sides", c.TrainDocs, c.ValDocs)
	}
	var want int64
	for i := range 50 {
		want += int64(len(doc(fmt.Sprint("record ", i))))
	}
	if got := c.Manifest.TrainBytes + c.Manifest.ValBytes; got != want+int64(len(doc("notes"))) {
		t.Errorf("%d bytes of text, want %d (the records' text only)", got, want+int64(len(doc("notes"))))
	}
	// Records split by their text: the same records in other files, in
	// another order, land on the same sides.
	rev := append([]string(nil), lines...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	dir2 := write(t, t.TempDir(), map[string]string{"all.jsonl": strings.Join(rev, "\n"), "notes.txt": doc("notes")})
	c2, err := Load(context.Background(), Options{Paths: []string{dir2}, ValFraction: 0.2, MinTokens: 64})
	if err != nil {
		t.Fatal(err)
	}
	if c2.ValDocs != c.ValDocs || c2.Val.Len() != c.Val.Len() {
		t.Errorf("resharded records: %d held out (%d bytes), before %d (%d)", c2.ValDocs, c2.Val.Len(), c.ValDocs, c.Val.Len())
	}

	for name, text := range map[string]string{
		"malformed":  lines[0] + "\n{\"text\": \"cut off\n",
		"no text":    lines[0] + "\n" + `{"body": "x"}` + "\n",
		"not string": lines[0] + "\n" + `{"text": 42}` + "\n",
		"not object": lines[0] + "\n" + `["text"]` + "\n",
	} {
		p := filepath.Join(t.TempDir(), "bad.jsonl")
		os.WriteFile(p, []byte(text), 0o644)
		_, err := Load(context.Background(), Options{Paths: []string{p}, ValFraction: 0.2, MinTokens: 8})
		if !errors.Is(err, ErrJSONL) || !strings.Contains(err.Error(), p+":2:") {
			t.Errorf("%s: got %v, want an ErrJSONL naming %s:2", name, err, p)
		}
	}
}

func TestSplitByDocumentIsStable(t *testing.T) {
	files := map[string]string{}
	for i := range 200 {
		files[fmt.Sprintf("d%03d/f.txt", i)] = doc(fmt.Sprint(i))
	}
	dir := write(t, t.TempDir(), files)
	load := func(dir string) *Corpus {
		c, err := Load(context.Background(), Options{Paths: []string{dir}, ValFraction: 0.1, MinTokens: 64})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := load(dir)
	if a.ValDocs < 5 || a.ValDocs > 40 {
		t.Errorf("%d of 200 documents held out at val_fraction 0.1", a.ValDocs)
	}
	// Moved elsewhere, the same files split the same way: the split
	// hashes a file's path below its folder, not where the folder is.
	moved := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	b := load(moved)
	if string(a.Val.Raw()) != string(b.Val.Raw()) || string(a.Train.Raw()) != string(b.Train.Raw()) || a.Manifest.Hash != b.Manifest.Hash {
		t.Error("the same corpus in another folder split differently, or hashed differently")
	}
	// A new file moves no other document across the split.
	write(t, moved, map[string]string{"zzz/new.txt": doc("new")})
	c := load(moved)
	held := map[string]bool{}
	for _, f := range b.Manifest.Files {
		held[f.Name] = f.ValDocuments > 0
	}
	for _, f := range c.Manifest.Files {
		if was, ok := held[f.Name]; ok && was != (f.ValDocuments > 0) {
			t.Errorf("adding a file moved %s across the split", f.Name)
		}
	}
	if c.Manifest.Hash == b.Manifest.Hash {
		t.Error("adding a file left the manifest hash unchanged")
	}
}

func TestManifestContent(t *testing.T) {
	dir := write(t, t.TempDir(), map[string]string{"a.txt": doc("a"), "b.jsonl": `{"text":"one"}` + "\n" + `{"text":"two"}` + "\n", "img.bin": "PNG\x00\x01\x02"})
	c, err := Load(context.Background(), Options{Paths: []string{dir}, ValFraction: 0.3, MinTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), ManifestName)
	if err := c.Manifest.Write(out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 2 || m.Documents != 3 || m.TrainDocuments+m.ValDocuments != 3 || len(m.Hash) != 64 || m.Tokenizer != "bytes" {
		t.Fatalf("manifest: %s", b)
	}
	byName := map[string]ManifestFile{}
	for _, f := range m.Files {
		byName[f.Name] = f
	}
	if f := byName["a.txt"]; f.Size != int64(len(doc("a"))) || f.Documents != 1 || f.Format != "text" ||
		f.SHA256 != sha(doc("a")) {
		t.Errorf("a.txt: %+v", f)
	}
	if f := byName["b.jsonl"]; f.Documents != 2 || f.Format != "jsonl" {
		t.Errorf("b.jsonl: %+v", f)
	}
	if len(m.Skipped) != 1 || !strings.HasSuffix(m.Skipped[0].Path, "img.bin") || !strings.Contains(m.Skipped[0].Reason, "binary") {
		t.Errorf("skipped: %+v, want img.bin as binary", m.Skipped)
	}
	if m.TrainTokens+m.ValTokens != int64(len(doc("a"))+len("one")+len("two")) {
		t.Errorf("%d + %d tokens", m.TrainTokens, m.ValTokens)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "model.bin")
	os.WriteFile(bin, append([]byte(doc("x")), 0, 1, 2), 0o644)
	if _, err := Load(context.Background(), Options{Paths: []string{bin}, ValFraction: 0.1, MinTokens: 8}); !errors.Is(err, ErrBinary) || !strings.Contains(err.Error(), bin) {
		t.Errorf("a binary file named: %v, want ErrBinary naming it", err)
	}
	// A folder of nothing but binaries is empty, and says what it skipped.
	if _, err := Load(context.Background(), Options{Paths: []string{dir}, ValFraction: 0.1, MinTokens: 8}); !errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), "model.bin") {
		t.Errorf("a folder of binaries: %v, want ErrEmpty naming the skipped file", err)
	}
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err == nil {
		if _, err := Load(context.Background(), Options{Paths: []string{fifo}, ValFraction: 0.1, MinTokens: 8}); err == nil || !strings.Contains(err.Error(), "named pipe") {
			t.Errorf("a named pipe: %v", err)
		}
	}
	if os.Getuid() != 0 {
		locked := filepath.Join(t.TempDir(), "locked.txt")
		os.WriteFile(locked, []byte(doc("l")), 0o000)
		if _, err := Load(context.Background(), Options{Paths: []string{filepath.Dir(locked)}, ValFraction: 0.1, MinTokens: 8}); err == nil || !strings.Contains(err.Error(), "locked.txt") {
			t.Errorf("an unreadable file: %v, want an error naming it", err)
		}
	}
	if _, err := Load(context.Background(), Options{Paths: []string{dir}, Exclude: []string{"a/[b"}, ValFraction: 0.1, MinTokens: 8}); err == nil || !strings.Contains(err.Error(), "data.exclude") {
		t.Errorf("a malformed pattern: %v", err)
	}
}

// FuzzJSONL: no line of any file crashes the reader; what it accepts
// are records whose text it hands over whole.
func FuzzJSONL(f *testing.F) {
	f.Add([]byte(`{"text":"hello"}` + "\n" + `{"text":"a\nb","x":[1,2]}`))
	f.Add([]byte("\n\n{\"text\":null}\n"))
	f.Add([]byte(`{"text":"\ud800"}`))
	f.Add([]byte("{\"text\":\"\xff\"}\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		err := readJSONL(b, func(line int, text []byte) {
			if line < 1 {
				t.Fatalf("line %d", line)
			}
			n++
		})
		if err != nil && !errors.Is(err, ErrJSONL) {
			t.Fatalf("error %v is not ErrJSONL", err)
		}
		if n > strings.Count(string(b), "\n")+1 {
			t.Fatalf("%d records from %d lines", n, strings.Count(string(b), "\n")+1)
		}
	})
}
