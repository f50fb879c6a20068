package data

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// file is one file of the corpus, as found.
type file struct {
	path string // as opened
	name string // relative to the folder or glob base it was found under (slashes); the split hashes it
	size int64
	// named: the user named this file itself (not found in a folder or
	// by a glob), so it is read whatever the filters say, and a binary
	// one is an error rather than skipped.
	named bool
}

// formatOf is how a file is read: JSON Lines by its ending, else text.
func formatOf(name string) string {
	if strings.HasSuffix(name, ".jsonl") {
		return "jsonl"
	}
	return "text"
}

// filters are data.extensions, data.include and data.exclude, and the
// default corpus's own rules (no tests, no testdata, no hidden folders).
type filters struct {
	exts, include, exclude []string
	goSrc                  bool
}

// keepDir reports whether the walk goes into folder rel (slashes) of a source.
func (f filters) keepDir(rel, name string) bool {
	if f.goSrc && (name == "testdata" || strings.HasPrefix(name, ".")) {
		return false
	}
	return !matchAny(f.exclude, rel, name)
}

// keepFile reports whether a file found in a folder or by a glob is read.
func (f filters) keepFile(rel, name string) bool {
	if f.goSrc && strings.HasSuffix(name, "_test.go") {
		return false
	}
	if len(f.exts) > 0 {
		ok := false
		for _, e := range f.exts {
			ok = ok || strings.HasSuffix(name, e)
		}
		if !ok {
			return false
		}
	}
	if len(f.include) > 0 && !matchAny(f.include, rel, name) {
		return false
	}
	return !matchAny(f.exclude, rel, name)
}

// matchAny: a pattern without a slash matches the base name (as in
// .gitignore: "*.min.js", "vendor"); one with a slash matches the whole
// path relative to the source, where "**" stands for any number of folders.
func matchAny(patterns []string, rel, name string) bool {
	for _, p := range patterns {
		if !strings.Contains(p, "/") {
			if ok, _ := path.Match(p, name); ok {
				return true
			}
			continue
		}
		if matchPath(strings.Split(strings.Trim(p, "/"), "/"), strings.Split(rel, "/")) {
			return true
		}
	}
	return false
}

// matchPath matches path segments against pattern segments, "**" matching
// zero or more segments.
func matchPath(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(segs); i++ {
				if matchPath(pat[1:], segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], segs[0]); !ok {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

// checkPatterns refuses a malformed pattern before anything is read.
func checkPatterns(key string, patterns []string) error {
	for _, p := range patterns {
		for _, s := range strings.Split(p, "/") {
			if s == "**" {
				continue
			}
			if _, err := path.Match(s, ""); err != nil {
				return fmt.Errorf("data: %s pattern %q: %v", key, p, err)
			}
		}
	}
	return nil
}

func isGlob(p string) bool { return strings.ContainsAny(p, "*?[") }

// globBase is the folder a glob is walked from: its leading segments
// without pattern characters.
func globBase(p string) (base, rest string) {
	segs := strings.Split(filepath.ToSlash(p), "/")
	i := 0
	for i < len(segs)-1 && !isGlob(segs[i]) {
		i++
	}
	base = strings.Join(segs[:i], "/")
	if base == "" {
		if strings.HasPrefix(p, "/") {
			base = "/"
		} else {
			base = "."
		}
	}
	return filepath.FromSlash(base), strings.Join(segs[i:], "/")
}

// list expands the sources into files, in the order given (each folder's
// or glob's files sorted by path), each file once. skipped gets the
// folders that could not be read.
func list(sources []string, f filters, skipped *[]Skipped) ([]file, error) {
	var out []file
	seen := map[string]bool{}
	add := func(x file) {
		abs, err := filepath.Abs(x.path)
		if err != nil {
			abs = x.path
		}
		if !seen[abs] {
			seen[abs] = true
			out = append(out, x)
		}
	}
	for _, src := range sources {
		var root string
		var pattern []string
		if isGlob(src) {
			base, rest := globBase(src)
			root, pattern = base, strings.Split(rest, "/")
			if err := checkPatterns("data.path", []string{rest}); err != nil {
				return nil, err
			}
		} else {
			st, err := os.Stat(src)
			if err != nil {
				return nil, fmt.Errorf("data: data.path: %w (set data.path to text files, folders or globs)", err)
			}
			if !st.IsDir() {
				if !st.Mode().IsRegular() {
					return nil, fmt.Errorf("data: data.path = %s is a %s, not a regular file or a folder (it would be read forever); give a text file or a folder of them", src, fileKind(st.Mode()))
				}
				add(file{path: src, name: filepath.Base(src), size: st.Size(), named: true})
				continue
			}
			root = src
		}
		var found []file
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == root {
					return err
				}
				*skipped = append(*skipped, Skipped{Path: p, Reason: err.Error()})
				return nil // an unreadable folder is skipped (and listed), not fatal
			}
			rel, _ := filepath.Rel(root, p)
			rel = filepath.ToSlash(rel)
			if d.IsDir() {
				if p != root && !f.keepDir(rel, d.Name()) {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			if pattern != nil && !matchPath(pattern, strings.Split(rel, "/")) {
				return nil
			}
			if !f.keepFile(rel, d.Name()) {
				return nil
			}
			found = append(found, file{path: p, name: rel})
			return nil
		})
		if err != nil {
			if pattern != nil && os.IsNotExist(err) {
				return nil, fmt.Errorf("data: data.path = %q: the folder %s it searches does not exist", src, root)
			}
			return nil, fmt.Errorf("data: walking %s: %w", root, err)
		}
		if pattern != nil && len(found) == 0 {
			return nil, fmt.Errorf("data: data.path = %q matches no file (after data.extensions, data.include and data.exclude): %w", src, ErrEmpty)
		}
		// By path, as the corpus always was (not the walk's order, which
		// differs where a name sorts before a folder's "/").
		sort.Slice(found, func(i, j int) bool { return found[i].path < found[j].path })
		for _, x := range found {
			if fi, err := os.Stat(x.path); err == nil {
				x.size = fi.Size()
			}
			add(x)
		}
	}
	return out, nil
}
