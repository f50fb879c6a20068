package trainer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
