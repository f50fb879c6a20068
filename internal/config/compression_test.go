package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/compression"
)

// load writes text to a file and loads it.
func load(t *testing.T, text string) (Config, string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "exp.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, nil)
	return c, path, err
}

// TestCompressionCasesOfTheIssue: the three ways the two [compression]
// validators disagreed, now answered by one, at load time.
func TestCompressionCasesOfTheIssue(t *testing.T) {
	// lowrank with int8 coefficients: refused at load, naming file, line
	// and key (it used to pass, read the corpus, then fail in a worker).
	_, path, err := load(t, "[run]\nname = \"x\"\n\n[compression]\nmethod = \"lowrank\"\nrank = 8\nprecision = \"int8\"\n")
	if err == nil || !strings.Contains(err.Error(), path+":7: compression.precision") {
		t.Errorf("lowrank + int8: %v, want a refusal at %s:7 naming compression.precision", err, path)
	}
	// bf16 factors: one validator, which accepts what the codec builds.
	c, _, err := load(t, "[compression]\nmethod = \"lowrank\"\nrank = 8\nprecision = \"bf16\"\n")
	if err != nil {
		t.Errorf("lowrank + bf16: %v", err)
	} else if _, err := compression.NewLink(c.Compression, c.Model.NEmbd, c.Model.VocabSize, 1); err != nil {
		t.Errorf("lowrank + bf16 loaded but builds no codec: %v", err)
	}
	// rank as the integer docs/config.md says it is.
	c, _, err = load(t, "[compression]\nmethod = \"subspace\"\nrank = 4\nprecision = \"int4\"\n")
	if err != nil || c.Compression.Rank != 4 {
		t.Errorf("rank = 4: rank %v, err %v", c.Compression.Rank, err)
	}
	c, _, err = load(t, "[compression]\nmethod = \"lowrank\"\nrank = \"auto\"\n")
	if err != nil || c.Compression.Rank != compression.RankAuto {
		t.Errorf(`rank = "auto": rank %v, err %v`, c.Compression.Rank, err)
	}
}

// TestEveryMethodAndPrecision: whatever pair the config accepts builds a
// codec for the run's model; whatever it refuses is refused naming
// compression.precision (or compression.rank) with the file and line.
func TestEveryMethodAndPrecision(t *testing.T) {
	methods := []string{"none", "fp16", "bf16", "int8", "topk", "lowrank", "subspace"}
	precisions := []string{"fp32", "fp16", "bf16", "int8", "int6", "int4", "int3", "int2"}
	accepted := 0
	for _, m := range methods {
		for _, p := range precisions {
			t.Run(m+"/"+p, func(t *testing.T) {
				text := fmt.Sprintf("[compression]\nmethod = %q\nrank = 16\nprecision = %q\n", m, p)
				c, path, err := load(t, text)
				if err != nil {
					if !strings.Contains(err.Error(), path+":4: compression.precision") {
						t.Errorf("refused without naming the key and its line: %v", err)
					}
					return
				}
				accepted++
				if _, err := compression.NewLink(c.Compression, c.Model.NEmbd, c.Model.VocabSize, uint64(c.Run.Seed)); err != nil {
					t.Errorf("accepted, but no codec builds: %v", err)
				}
			})
		}
	}
	// fp32/fp16/bf16 for every method, int8 and below for subspace only.
	if want := 3*len(methods) + 5; accepted != want {
		t.Errorf("%d of %d pairs accepted, want %d", accepted, len(methods)*len(precisions), want)
	}
}

// TestCompressionErrorsNameTheirLines: every problem of a file gets its
// own line, and a problem of a key the file does not set gets the file.
func TestCompressionErrorsNameTheirLines(t *testing.T) {
	_, path, err := load(t, "[compression]\nmethod = \"subspace\"\ntopk = 2.0\nuntie_head = true\n\n[model]\nn_embd = 8\nn_head = 2\n")
	if err == nil {
		t.Fatal("a subspace run without a rank loaded")
	}
	for _, want := range []string{path + ":3: compression.topk = 2", path + ": compression.rank = (unset)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	_, path, err = load(t, "[compression]\nmethod = \"subspace\"\nrank = 300\n")
	if err == nil || !strings.Contains(err.Error(), path+":3: compression.rank = 300: must be at most model.n_embd = 256") {
		t.Errorf("rank over the width: %v", err)
	}
}

// TestCompressionReplicas: the [compression.replicas] table loads, and each
// bad setting is refused at its line, naming the key and what to do.
func TestCompressionReplicas(t *testing.T) {
	c, _, err := load(t, "[pipeline]\nreplicas = 2\n[train]\nmicro_batches = 2\n[compression.replicas]\nmethod = \"powersgd\"\nrank = 8\n")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Compression.Replicas; r.Method != compression.ReducePowerSGD || r.Rank != 8 || !r.ErrorFeedback {
		t.Errorf("loaded %+v, want powersgd rank 8 with error feedback (the default)", r)
	}
	if c, _, err := load(t, "[compression]\nmethod = \"int8\"\n"); err != nil || c.Compression.Replicas != compression.DefaultReduceConfig() {
		t.Errorf("without the table: %+v, %v; want the defaults", c.Compression.Replicas, err)
	}
	for _, tc := range []struct{ text, want string }{
		{"[compression.replicas]\nmethod = \"int8\"\nrank = 4\n", ":6: compression.replicas.rank = 4: works only with method = \"powersgd\""},
		{"[compression.replicas]\nmethod = \"bf16\"\n", ":5: compression.replicas.method = \"bf16\": want one of none, fp16, int8, powersgd"},
		{"[compression.replicas]\nmethod = \"powersgd\"\nrank = 64\n", ":6: compression.replicas.rank = 64: must be at most model.n_embd"},
		{"[compression.replicas]\nmethod = \"powersgd\"\nrank = -2\n", ":6: compression.replicas.rank = -2"},
		{"[compression.replicas]\nmethod = \"fp16\"\nblock = 4\n", ":6: unknown key \"compression.replicas.block\""},
	} {
		text := "[model]\nn_embd = 32\nn_head = 2\n" + tc.text
		_, _, err := load(t, text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error containing %q", tc.text, err, tc.want)
		}
	}
	var c2 Config = Default()
	if err := c2.Set("compression.replicas.method=int8"); err != nil || c2.Compression.Replicas.Method != compression.ReduceInt8 {
		t.Errorf("--set compression.replicas.method=int8: %v, method %v", err, c2.Compression.Replicas.Method)
	}
}
