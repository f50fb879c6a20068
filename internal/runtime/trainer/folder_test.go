package trainer

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/engine"
)

// treeHash is every file's path and content under dir, hashed: a folder
// left byte-identical hashes the same.
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		lines = append(lines, fmt.Sprintf("%s %x", rel, sha256.Sum256(b)))
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestFolderOfAnotherRunIsRefused: a new run into a finished run's folder
// is refused (naming --resume and --force) and leaves it as it was; with
// --force the old run's files are replaced, not mixed with the new ones.
func TestFolderOfAnotherRunIsRefused(t *testing.T) {
	c := tinyConfig(t)
	dir := t.TempDir()
	runTiny(t, c, dir)
	before := treeHash(t, dir)
	c.Run.Steps = 3
	_, err := Run(context.Background(), Options{Config: c, Out: dir})
	if !errors.Is(err, ErrFolderTaken) || !strings.Contains(err.Error(), "--resume") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("a second run into a finished run's folder: %v", err)
	}
	if after := treeHash(t, dir); after != before {
		t.Fatalf("the refused run changed the folder:\nbefore\n%s\nafter\n%s", before, after)
	}
	if _, err := Run(context.Background(), Options{Config: c, Out: dir, Force: true}); err != nil {
		t.Fatal(err)
	}
	recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
	if err != nil || len(recs) != 3 {
		t.Fatalf("after --force, metrics.jsonl holds %d steps (%v), want the new run's 3", len(recs), err)
	}
	st, err := LoadState(filepath.Join(dir, StateFile))
	if err != nil || st.Step != 3 {
		t.Fatalf("after --force the state is of step %v (%v), want 3", st, err)
	}
}

// TestUnrelatedFolderIsRefused: --out on a folder of other files is refused;
// with --force the run writes its files beside them and removes none of them.
func TestUnrelatedFolderIsRefused(t *testing.T) {
	c := tinyConfig(t)
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	os.WriteFile(notes, []byte("mine"), 0o644)
	if _, err := Run(context.Background(), Options{Config: c, Out: dir}); !errors.Is(err, ErrFolderTaken) || !strings.Contains(err.Error(), "not a narrowband run") {
		t.Fatalf("a run into a folder of other files: %v", err)
	}
	if _, err := Run(context.Background(), Options{Config: c, Out: dir, Force: true}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(notes); err != nil || string(b) != "mine" {
		t.Fatalf("--force touched a file that is not the run's: %q %v", b, err)
	}
}

// waitObserver holds a run after its first step until released, so that a
// second run can try the same folder meanwhile.
type waitObserver struct {
	started chan struct{}
	release chan struct{}
	once    bool
}

func (w *waitObserver) PublishStep(metrics.StepRecord) {
	if !w.once {
		w.once = true
		close(w.started)
		<-w.release
	}
}
func (w *waitObserver) PublishSpans([]metrics.Span) {}
func (w *waitObserver) PublishEvent(metrics.Event)  {}

// TestConcurrentRunsIntoOneFolder: while one run holds a folder, a second
// one into it is refused, naming the holder's pid; the first finishes with
// a valid record.
func TestConcurrentRunsIntoOneFolder(t *testing.T) {
	c := tinyConfig(t)
	dir := t.TempDir()
	obs := &waitObserver{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), Options{Config: c, Out: dir, Observer: obs})
		done <- err
	}()
	<-obs.started
	_, err := Run(context.Background(), Options{Config: c, Out: dir, Force: true})
	close(obs.release)
	if !errors.Is(err, ErrFolderInUse) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Errorf("a second run into a folder in use: %v, want a refusal naming pid %d", err, os.Getpid())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l := losses(t, dir); len(l) != c.Run.Steps+2 {
		t.Errorf("the first run's record has %d loss values, want %d", len(l), c.Run.Steps+2)
	}
	if _, err := os.Stat(filepath.Join(dir, LockFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lock file outlived its run: %v", err)
	}
}

// TestRefusedResumeLeavesTheFolderAlone: every refused --resume (another
// model, a finished run, a folder that is not a run, one that does not
// exist) is refused before anything is written or created.
func TestRefusedResumeLeavesTheFolderAlone(t *testing.T) {
	c := tinyConfig(t)
	dir := t.TempDir()
	runTiny(t, c, dir)
	before := treeHash(t, dir)
	other := c
	other.Model.NEmbd = 64
	for _, tc := range []struct {
		name string
		cfg  config.Config
		want string
	}{
		{"another model", other, "resume with the run's own config.toml"},
		{"a finished run", c, "already finished"},
	} {
		_, err := Run(context.Background(), Options{Config: tc.cfg, Out: dir, Resume: dir})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if after := treeHash(t, dir); after != before {
			t.Fatalf("%s: the refused resume changed the folder", tc.name)
		}
	}
	missing := filepath.Join(t.TempDir(), "never-ran")
	if _, err := Run(context.Background(), Options{Config: c, Out: missing, Resume: missing}); err == nil {
		t.Error("resumed a folder that does not exist")
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused --resume created %s", missing)
	}
}

// stopAt asks the run to stop once step n has been published.
type stopAt struct {
	n    int
	stop chan struct{}
}

func (s *stopAt) PublishStep(r metrics.StepRecord) {
	if r.Step == s.n {
		close(s.stop)
	}
}
func (s *stopAt) PublishSpans([]metrics.Span) {}
func (s *stopAt) PublishEvent(metrics.Event)  {}

// TestStopSavesAndResumes: a stop request (what Ctrl-C or SIGTERM sends)
// lets the step in progress finish, checkpoints it even with no
// checkpoint due, and says how to resume; resuming gives the loss curve of
// an uninterrupted run, bit for bit.
func TestStopSavesAndResumes(t *testing.T) {
	for _, stages := range []int{1, 2} {
		t.Run(fmt.Sprintf("stages=%d", stages), func(t *testing.T) {
			c := tinyConfig(t)
			c.Pipeline.Stages = stages
			c.Train.CheckpointMinutes = 0
			whole := t.TempDir()
			runTiny(t, c, whole)
			dir := t.TempDir()
			obs := &stopAt{n: 4, stop: make(chan struct{})}
			_, err := Run(context.Background(), Options{Config: c, Out: dir, Observer: obs, Stop: obs.stop})
			if !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "resume with: narrowband run "+filepath.Join(dir, "config.toml")+" --resume "+dir) {
				t.Fatalf("stopped run: %v", err)
			}
			st, err := LoadState(filepath.Join(dir, StateFile))
			if err != nil || st.Step != 4 {
				t.Fatalf("the stop saved step %v (%v), want 4", st, err)
			}
			if _, err := Run(context.Background(), Options{Config: c, Out: dir, Resume: dir}); err != nil {
				t.Fatal(err)
			}
			lw, lr := losses(t, whole), losses(t, dir)
			if len(lw) != len(lr) {
				t.Fatalf("%d loss values after resuming, %d uninterrupted", len(lr), len(lw))
			}
			for i := range lw {
				if math.Float64bits(lw[i]) != math.Float64bits(lr[i]) {
					t.Fatalf("value %d: resumed %v, uninterrupted %v", i, lr[i], lw[i])
				}
			}
		})
	}
}

// TestStopWhileWaitingForPeers: a stop request during set-up (a WebRTC run
// waiting for peers that never come) ends the run at once.
func TestStopWhileWaitingForPeers(t *testing.T) {
	c := tinyConfig(t)
	c.Pipeline.Stages = 2
	c.Pipeline.Transport = "webrtc"
	c.Pipeline.LocalPeers = 0
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), Options{Config: c, Out: t.TempDir(), Stop: stop})
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	close(stop)
	select {
	case err := <-done:
		if !errors.Is(err, ErrStopped) {
			t.Errorf("stopped while waiting for peers: %v", err)
		}
		t.Logf("stopped %v after the request", time.Since(t0).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("the run did not stop while waiting for peers")
	}
}

// TestModelTooLargeIsRefusedBeforeAllocation: a context length whose
// attention matrices cannot fit is refused with the estimate and the
// limit, before any memory is taken (it used to die in Go's out-of-memory
// crash).
func TestModelTooLargeIsRefusedBeforeAllocation(t *testing.T) {
	c := tinyConfig(t)
	c.Model.BlockSize = 65536
	_, err := Run(context.Background(), Options{Config: c, Out: t.TempDir()})
	if !errors.Is(err, engine.ErrNoMemory) || !strings.Contains(err.Error(), "GB available") || !strings.Contains(err.Error(), "model.block_size 65536") {
		t.Fatalf("block_size = 65536: %v", err)
	}
}

// TestEndlessDataIsRefused: a named pipe as data.path is refused at once
// instead of being read forever.
func TestEndlessDataIsRefused(t *testing.T) {
	c := tinyConfig(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("no named pipes here:", err)
	}
	c.Data.Path = config.Paths{fifo}
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), Options{Config: c, Out: t.TempDir()})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "named pipe") {
			t.Errorf("data.path = a FIFO: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a FIFO as data.path is still being read")
	}
}

func TestSweepFolderNames(t *testing.T) {
	got := folderNames([]string{"a", "a", "A", "../../etc", "x/y", "", "..", strings.Repeat("k", 300), "model.n_embd=64,train.lr=1e-3"})
	if len(got) != 9 {
		t.Fatal(got)
	}
	seen := map[string]bool{}
	for _, n := range got {
		if n == "" || n == "." || n == ".." || strings.ContainsAny(n, `/\`) || len(n) > 130 || seen[strings.ToLower(n)] {
			t.Errorf("folder name %q is empty, a path, too long or not unique (all: %q)", n, got)
		}
		seen[strings.ToLower(n)] = true
	}
	if got[0] != "a" || got[1] != "a-2" || got[8] != "model.n_embd=64,train.lr=1e-3" {
		t.Errorf("names %q", got)
	}
}

// TestSweepVariantsKeepTheirFolders: two variants named alike, and one
// whose name is a path, each get a folder of their own inside the sweep's.
func TestSweepVariantsKeepTheirFolders(t *testing.T) {
	c := tinyConfig(t)
	c.Run.Steps = 2
	c.Variant = []map[string]any{
		{"name": "same", "train.learning_rate": 1e-3},
		{"name": "same", "train.learning_rate": 2e-3},
		{"name": "../escape", "train.learning_rate": 3e-3},
	}
	dir := t.TempDir()
	res, err := RunSweep(context.Background(), Options{Config: c, Out: dir})
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, r := range res {
		if filepath.Dir(r.Dir) != dir {
			t.Errorf("variant %q ran in %s, outside the sweep's folder %s", r.Variant, r.Dir, dir)
		}
		dirs = append(dirs, r.Dir)
	}
	slices.Sort(dirs)
	if len(slices.Compact(dirs)) != 3 {
		t.Errorf("the three variants share folders: %q", dirs)
	}
}
