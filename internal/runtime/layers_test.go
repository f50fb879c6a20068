package runtime_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/narrowband/narrowband/"

// floors are the import rules of docs/architecture.md: a package imports
// only packages on lower floors. The vocabulary every side shares (frames,
// records, links, data) is on the ground floor, so the web view, the
// simulator and the WebRTC links import it downward; the runtime's four
// packages are stacked in the order they use each other.
var floors = [][]string{
	{"internal/wire", "internal/metrics", "internal/transport", "internal/tokenizer", "internal/netns", "internal/identity", "stages/kernels", "scheduler"},
	{"stages/kernels/fastblas", "stages", "compression", "scheduler/sim", "signaling", "web", "internal/ledger", "internal/data"},
	{"signaling/rtc", "internal/config", "web/webtest", "internal/transport/transporttest"},
	{"internal/report", "internal/runtime/engine"},
	{"internal/runtime/pipeline"},
	{"internal/runtime/launch"},
	{"internal/runtime/trainer"},
	{"internal/runtime", "cmd/narrowband", "experiments/vs-pytorch"},
}

func floorOf(pkg string) int {
	for i, f := range floors {
		if slices.Contains(f, pkg) {
			return i
		}
	}
	return -1
}

// TestImportsGoDownward: no package imports one on its own floor or above
// it, directly or through others (go list -deps), and every package of the
// module has a floor.
func TestImportsGoDownward(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}{{if not .Standard}} {{join .Imports " "}}{{end}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, ok := strings.CutPrefix(f[0], module)
		if !ok {
			continue // the standard library or a dependency
		}
		seen++
		fl := floorOf(pkg)
		if fl < 0 {
			t.Errorf("package %s has no floor: add it to floors here and to docs/architecture.md", pkg)
			continue
		}
		for _, imp := range f[1:] {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if df := floorOf(dep); df >= fl {
				t.Errorf("%s (floor %d) imports %s (floor %d): imports must go to a lower floor", pkg, fl, dep, df)
			}
		}
	}
	if seen < 20 {
		t.Fatalf("go list saw only %d of the module's packages", seen)
	}
}
