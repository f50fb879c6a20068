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

// TestSwarmConfigRefusals: what a swarm cannot take is refused at its
// line, saying why.
func TestSwarmConfigRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		set        func(c *Config)
	}{
		{"link fault", "only kill, join and leave", func(c *Config) {
			c.Faults.Events = []FaultEvent{{AtStep: 1, Kind: "cut", Stage: 0, Duration: 1}}
		}},
		{"churn in processes", "stage processes of a swarm are linked by lanes only", func(c *Config) {
			c.Pipeline.Processes = true
			c.Faults.Events = []FaultEvent{{AtStep: 1, Kind: "join"}}
		}},
		{"throughput in processes", "linked by lanes only", func(c *Config) {
			c.Pipeline.Processes = true
			c.Pipeline.Routing = "throughput"
		}},
		{"routing", `must be "round-robin" or "throughput"`, func(c *Config) { c.Pipeline.Routing = "fastest" }},
		{"slow fraction", "must be in [0, 1)", func(c *Config) { c.Pipeline.SlowFraction = 1.5 }},
		{"join without replicas", "needs pipeline.replicas ≥ 2", func(c *Config) {
			c.Pipeline.Replicas = 1
			c.Faults.Events = []FaultEvent{{AtStep: 1, Kind: "join"}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Run.Steps = 10
			c.Pipeline.Stages = 2
			c.Pipeline.Replicas = 2
			c.Train.MicroBatches = 4
			c.Train.BatchSize = 8
			tc.set(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	c := Default()
	c.Run.Steps = 10
	c.Pipeline.Stages, c.Pipeline.Replicas = 2, 2
	c.Train.MicroBatches, c.Train.BatchSize = 4, 8
	c.Pipeline.Routing, c.Pipeline.SlowFraction, c.Pipeline.SlowSteps = "throughput", 0.5, 3
	c.Faults.Events = []FaultEvent{{AtStep: 2, Kind: "join"}, {AtStep: 3, Kind: "leave", Replica: 1}, {AtStep: 4, Kind: "kill", Stage: 1}}
	if err := c.Validate(); err != nil {
		t.Fatalf("a swarm with churn in goroutines: %v", err)
	}
}
