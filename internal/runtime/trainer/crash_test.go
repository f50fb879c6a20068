package trainer

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narrowband/narrowband/stages"
)

// crashWriterEnv makes this test binary a process that rewrites one
// checkpoint file forever, so the test can kill it mid-write.
const crashWriterEnv = "NARROWBAND_CRASH_WRITER"

func init() {
	path := os.Getenv(crashWriterEnv)
	if path == "" {
		return
	}
	data := make([]float32, 8<<20) // 32 MiB: a write takes a while
	for gen := 1; ; gen++ {
		for i := range data {
			data[i] = float32(gen)
		}
		md := map[string]string{"gen": strconv.Itoa(gen)}
		if err := stages.WriteSafetensors(path, []stages.Tensor{{Name: "w", Shape: []int{len(data)}, Data: data}}, md); err != nil {
			os.Exit(3)
		}
	}
}

// TestKillDuringCheckpointWrite: a process killed (SIGKILL) while writing a
// checkpoint leaves the previous checkpoint whole and loadable, every time.
func TestKillDuringCheckpointWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a writer process repeatedly")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "checkpoint.safetensors")
	for round := 0; round < 8; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashWriterEnv+"="+path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let it finish at least one write, then kill it at an arbitrary
		// point of a later one.
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(path); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(20+37*round) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		ts, md, err := stages.ReadSafetensors(path)
		if err != nil {
			t.Fatalf("round %d: after a kill the checkpoint does not load: %v", round, err)
		}
		gen, _ := strconv.Atoi(md["gen"])
		if gen < 1 || len(ts) != 1 || len(ts[0].Data) != 8<<20 {
			t.Fatalf("round %d: checkpoint holds generation %d with %d tensors", round, gen, len(ts))
		}
		for _, v := range ts[0].Data {
			if v != float32(gen) {
				t.Fatalf("round %d: generation %d checkpoint holds a value %v from another write", round, gen, v)
			}
		}
		t.Logf("round %d: killed; checkpoint generation %d intact", round, gen)
	}
}

// TestDiskFullDuringCheckpoint: the run's folder is a small tmpfs that
// holds one checkpoint but not the temporary copy of the next. The run
// stops with a clear error, and the checkpoint already saved is whole and
// resumable.
func TestDiskFullDuringCheckpoint(t *testing.T) {
	c := tinyConfig(t)
	c.Train.CheckpointInterval = 2
	ref := t.TempDir()
	runTiny(t, c, ref)
	var used int64
	entries, _ := os.ReadDir(ref)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			used += fi.Size()
		}
	}
	st, err := os.Stat(filepath.Join(ref, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Room for everything once plus half a state file: the second
	// checkpoint's temporary file cannot be written.
	size := used + st.Size()/2
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root): %v", err)
	}
	defer syscall.Unmount(dir, 0)
	_, err = Run(context.Background(), Options{Config: c, Out: dir})
	if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "checkpoint") {
		t.Fatalf("err = %v, want a checkpoint error that says the disk is full", err)
	}
	saved, err := LoadState(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatalf("the checkpoint saved before the disk filled is not loadable: %v", err)
	}
	if saved.Step != 2 {
		t.Errorf("saved state is at step %d, want 2", saved.Step)
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(matches) != 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}
	// And the run resumes from it once there is room again.
	if _, err := Run(context.Background(), Options{Config: c, Out: t.TempDir(), Resume: dir}); err != nil {
		t.Fatalf("resume from the saved checkpoint: %v", err)
	}
}
