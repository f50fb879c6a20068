package data

import (
	"errors"
	"fmt"
	"hash/fnv"
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
}

// Load reads the corpus.
func Load(o Options) (*Corpus, error) {
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
		b, err := os.ReadFile(path)
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
	var valNames []string
	for _, f := range files {
		rel, _ := filepath.Rel(path, f)
		b, err := os.ReadFile(f)
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

// isVal is the by-file split: a stable hash of the relative path.
func isVal(rel string, frac float64) bool {
	h := fnv.New64a()
	h.Write([]byte(rel))
	return float64(h.Sum64()%1_000_000) < frac*1_000_000
}
