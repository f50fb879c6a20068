package trainer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A run folder belongs to one run. A run refuses a folder that holds
// anything but its own resumable run (unless Options.Force), holds a lock
// on it for its lifetime, and checks everything a resume needs before it
// writes a byte.

// LockFile is the lock a run holds on its folder while it runs: an
// flock(2)ed file holding the run's pid. The kernel drops the lock when the
// process dies, so a crashed run never locks its folder for good.
const LockFile = "narrowband.lock"

// ErrFolderInUse is a run folder another live run holds.
var ErrFolderInUse = errors.New("the run folder is in use by another narrowband run")

// ErrFolderTaken is a folder holding something else than this run's own
// resumable run.
var ErrFolderTaken = errors.New("the run folder is not empty")

// runFiles are the files a run (or a sweep) writes into its folder; with
// Force, a new run removes them first so that nothing of the old one is
// left beside the new one's.
var runFiles = []string{
	"config.toml", "metrics.jsonl", "summary.json", "timeline.jsonl", CheckpointFile, StateFile,
	"signal.json", "secret", "sweep.json", "summary.md", "report.md", "ledger.jsonl",
}

// folderLock is a held LockFile.
type folderLock struct {
	f    *os.File
	path string
}

// lockFolder creates dir if needed and takes its lock, or says who holds it.
func lockFolder(dir string) (*folderLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("output folder: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("output folder %s: lock: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		holder := strings.TrimSpace(string(b))
		if holder == "" {
			holder = "unknown"
		}
		return nil, fmt.Errorf("%w: %s is held by pid %s (%s); wait for that run to end, or choose another --out", ErrFolderInUse, dir, holder, path)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &folderLock{f: f, path: path}, nil
}

func (l *folderLock) release() {
	if l == nil {
		return
	}
	os.Remove(l.path)
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
}

// checkFolder refuses a folder that holds anything besides the lock,
// unless it is the run being resumed, or force is set (then the old run's
// files are removed).
func checkFolder(dir string, resuming, force bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("output folder: %w", err)
	}
	var names []string
	run := false
	for _, e := range ents {
		if e.Name() == LockFile || strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp") {
			continue // ours, or a temp file a killed write left
		}
		names = append(names, e.Name())
		run = run || e.Name() == "config.toml" || e.Name() == "metrics.jsonl" || e.Name() == StateFile || e.Name() == "sweep.json"
	}
	switch {
	case len(names) == 0 || resuming:
		return nil
	case force:
		for _, n := range runFiles {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("output folder: --force: %w", err)
			}
		}
		return nil
	case run:
		return fmt.Errorf("%w: %s holds another run (%s); continue it with --resume %s, choose another --out, or replace it with --force", ErrFolderTaken, dir, strings.Join(first(names, 4), ", "), dir)
	}
	return fmt.Errorf("%w: %s holds %d files that are not a narrowband run (%s); choose an empty or new --out, or pass --force to write into it", ErrFolderTaken, dir, len(names), strings.Join(first(names, 4), ", "))
}

func first(names []string, n int) []string {
	if len(names) > n {
		return append(names[:n:n], "…")
	}
	return names
}

// folderName turns a sweep variant's name into one path element: letters,
// digits and . , = + - _ stay, anything else becomes _; a name that is
// empty, a dot or dots, or too long gets a hash of the whole name instead.
func folderName(variant string) string {
	var b strings.Builder
	for _, r := range variant {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(".,=+-_", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), ".")
	if s == "" || len(s) > 120 {
		h := sha256.Sum256([]byte(variant))
		if len(s) > 100 {
			s = s[:100] + "-"
		}
		s += hex.EncodeToString(h[:6])
	}
	return s
}

// folderNames gives every variant its own folder name, numbering clashes
// (two variants named alike, or alike once sanitized) in order.
func folderNames(variants []string) []string {
	out := make([]string, len(variants))
	used := map[string]bool{}
	for i, v := range variants {
		base := folderName(v)
		name := base
		for k := 2; used[strings.ToLower(name)]; k++ {
			name = fmt.Sprintf("%s-%d", base, k)
		}
		used[strings.ToLower(name)] = true
		out[i] = name
	}
	return out
}
