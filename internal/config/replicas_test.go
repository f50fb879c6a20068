package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pipeline.replicas parses, and what the runtime cannot run with several
// replicas a stage is refused at the line that set it, saying why.
func TestReplicasKey(t *testing.T) {
	c, err := Parse("[pipeline]\nstages = 2\nreplicas = 2\n[train]\nmicro_batches = 4\nbatch_size = 8\n", "r.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Pipeline.Replicas != 2 || c.Pipeline.ReplicaCount() != 2 {
		t.Fatalf("pipeline.replicas not applied: %+v", c.Pipeline)
	}
	if d := Default(); d.Pipeline.ReplicaCount() != 1 {
		t.Fatalf("default replicas %d, want 1", d.Pipeline.ReplicaCount())
	}
	const mb = "[train]\nmicro_batches = 2\nbatch_size = 4\n"
	for _, tc := range []struct{ name, text, want string }{
		{"negative", "[pipeline]\nreplicas = -1\n", "r.toml:2: pipeline.replicas = -1"},
		{"more than micro-batches", "[train]\nmicro_batches = 2\nbatch_size = 4\n[pipeline]\nreplicas = 3\n", "r.toml:5: pipeline.replicas = 3: must be at most train.micro_batches = 2"},
		{"async", mb + "[model]\nn_layer = 2\n[pipeline]\nstages = 2\nschedule = \"async\"\nreplicas = 2\n", "async schedule's stream"},
		{"subspace-tc", mb + "[pipeline]\nreplicas = 2\n[compression]\nmethod = \"subspace-tc\"\nrank = 8\n", "per replica's link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "r.toml")
			if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
