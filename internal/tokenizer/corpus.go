package tokenizer

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ListFiles expands paths into files: a file is itself, a folder is every
// regular file under it (walked in lexical order; symbolic links are not
// followed). With exts, only names ending in one of them are kept.
func ListFiles(paths []string, exts ...string) ([]string, error) {
	keep := func(name string) bool {
		if len(exts) == 0 {
			return true
		}
		for _, e := range exts {
			if strings.HasSuffix(name, e) {
				return true
			}
		}
		return false
	}
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("corpus: %w", err)
		}
		if !fi.IsDir() {
			out = append(out, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() && keep(d.Name()) {
				out = append(out, path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("corpus: %w", err)
		}
	}
	return out, nil
}

// ReadFiles reads each file whole.
func ReadFiles(files []string) ([][]byte, error) {
	docs := make([][]byte, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("corpus: %w", err)
		}
		docs = append(docs, b)
	}
	return docs, nil
}
