package data

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// Corpus is the text of a run, split into training and held-out bytes.
type Corpus struct {
	Source     string // where it came from, for logs
	Train, Val []byte
	TrainFiles int
	ValFiles   int
}

// ErrEmpty means the corpus has no usable text.
var ErrEmpty = errors.New("corpus is empty")

// GoRoot returns the Go installation whose src folder is the default corpus.
func GoRoot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if s := strings.TrimSpace(string(out)); s != "" {
			return s
		}
	}
	return runtime.GOROOT()
}

// Options say where the text is.
type Options struct {
	Path        string   // file or folder; "" = $(go env GOROOT)/src
	ValFraction float64  // share of files held out
	Extensions  []string // keep only these endings; nil = ".go" for the default, all otherwise
	MinBytes    int      // each split must hold at least this many bytes (block_size+1)
	// MaxBytes bounds the text read (0: no bound): a corpus larger than
	// this is refused, by the sizes of its files, before any is read.
	MaxBytes int64
}

// ErrTooLarge is a corpus over Options.MaxBytes.
var ErrTooLarge = errors.New("corpus is larger than the limit")

// Load reads the corpus. Only regular files are read (a device or a named
// pipe would be read forever); ctx stops it between chunks.
func Load(ctx context.Context, o Options) (*Corpus, error) {
	path, exts, goSrc := o.Path, o.Extensions, false
	if path == "" {
		path = filepath.Join(GoRoot(), "src")
		goSrc = true
		if exts == nil {
			exts = []string{".go"}
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		if goSrc {
			return nil, fmt.Errorf("data: the default corpus is the Go standard library's source, but %s is missing (%v); set data.path to a text file or folder", path, err)
		}
		return nil, fmt.Errorf("data: data.path: %w (set data.path to a text file or folder)", err)
	}
	c := &Corpus{Source: path}
	if !st.IsDir() {
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("data: data.path = %s is a %s, not a regular file or a folder (it would be read forever); give a text file or a folder of them", path, fileKind(st.Mode()))
		}
		if err := o.bound(path, st.Size()); err != nil {
			return nil, err
		}
		b, err := readFile(ctx, path, st.Size())
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		// One file: hold out its tail, rounded so both parts are usable.
		nVal := int(float64(len(b)) * o.ValFraction)
		if nVal < o.MinBytes {
			nVal = o.MinBytes
		}
		if len(b)-nVal < o.MinBytes {
			return nil, fmt.Errorf("data: %s has %d bytes; need at least %d (2 × block_size+1) to train and hold out: %w", path, len(b), 2*o.MinBytes, ErrEmpty)
		}
		c.Train, c.Val = b[:len(b)-nVal], b[len(b)-nVal:]
		c.TrainFiles, c.ValFiles = 1, 1
		return c, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable folders are skipped, not fatal
		}
		if d.IsDir() {
			if goSrc && p != path && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		name := d.Name()
		if goSrc && strings.HasSuffix(name, "_test.go") {
			return nil
		}
		if len(exts) > 0 {
			ok := false
			for _, e := range exts {
				ok = ok || strings.HasSuffix(name, e)
			}
			if !ok {
				return nil
			}
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("data: walking %s: %w", path, err)
	}
	sort.Strings(files)
	sizes := make([]int64, len(files))
	var total int64
	for i, f := range files {
		if fi, err := os.Stat(f); err == nil {
			sizes[i] = fi.Size()
			total += fi.Size()
		}
	}
	if err := o.bound(path, total); err != nil {
		return nil, err
	}
	var valNames []string
	for i, f := range files {
		rel, _ := filepath.Rel(path, f)
		b, err := readFile(ctx, f, sizes[i])
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("data: %w", ctx.Err())
		}
		if err != nil || len(b) == 0 {
			continue
		}
		if isVal(filepath.ToSlash(rel), o.ValFraction) {
			c.Val = append(c.Val, b...)
			c.ValFiles++
			valNames = append(valNames, rel)
		} else {
			c.Train = append(c.Train, b...)
			c.TrainFiles++
		}
	}
	if len(c.Train) < o.MinBytes || c.TrainFiles == 0 {
		return nil, fmt.Errorf("data: %s: no training text (%d files matched %v): %w", path, c.TrainFiles, exts, ErrEmpty)
	}
	if len(c.Val) < o.MinBytes {
		// Too few files for a by-file split: hold out the tail of the training text.
		n := max(int(float64(len(c.Train))*o.ValFraction), o.MinBytes)
		if len(c.Train)-n < o.MinBytes {
			return nil, fmt.Errorf("data: %s: %d bytes is too little to train and hold out (need %d): %w", path, len(c.Train), 2*o.MinBytes, ErrEmpty)
		}
		c.Val = append(c.Val, c.Train[len(c.Train)-n:]...)
		c.Train = c.Train[:len(c.Train)-n]
	}
	return c, nil
}

// bound refuses a corpus of size bytes over MaxBytes.
func (o Options) bound(path string, size int64) error {
	if o.MaxBytes > 0 && size > o.MaxBytes {
		return fmt.Errorf("data: %s holds %.2f GB of text, more than the limit of %.2f GB (data.max_bytes, or the memory this machine has available): %w", path, float64(size)/1e9, float64(o.MaxBytes)/1e9, ErrTooLarge)
	}
	return nil
}

// readFile reads a regular file of (at most) size bytes in chunks, checking
// ctx between them; a file that grew while being read is cut at size.
func readFile(ctx context.Context, path string, size int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const chunk = 4 << 20
	b := make([]byte, 0, size)
	for int64(len(b)) < size {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(int64(chunk), size-int64(len(b)))
		k, err := io.ReadFull(f, b[len(b):len(b)+int(n)])
		b = b[:len(b)+k]
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break // it shrank
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// ReadText reads a text file for evaluation: a regular file of at most
// maxBytes, stoppable through ctx.
func ReadText(ctx context.Context, path string, maxBytes int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %s, not a regular file (it would be read forever); give a text file", path, fileKind(st.Mode()))
	}
	if maxBytes > 0 && st.Size() > maxBytes {
		return nil, fmt.Errorf("%s has %.2f GB, more than the %.2f GB this command reads: %w", path, float64(st.Size())/1e9, float64(maxBytes)/1e9, ErrTooLarge)
	}
	return readFile(ctx, path, st.Size())
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	}
	return "special file"
}

// isVal is the by-file split: a stable hash of the relative path.
func isVal(rel string, frac float64) bool {
	h := fnv.New64a()
	h.Write([]byte(rel))
	return float64(h.Sum64()%1_000_000) < frac*1_000_000
}
