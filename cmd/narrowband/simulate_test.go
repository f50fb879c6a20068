package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/data"
)

// swarmTOML is a 2-stage pipeline with given compute times (nothing is
// measured) on 20 Mbit/s links, 10 ms one way.
const swarmTOML = `
[data]
path = "%s"
[model]
n_layer = 2
n_head = 2
n_embd = 32
block_size = 32
[train]
batch_size = 16
micro_batches = 4
[pipeline]
stages = 2
[network]
bandwidth_mbps = 20
latency_ms = 10
[simulate]
forward_ms = [2]
backward_ms = [4]
optimizer_ms = [1]
`

// TestSimulateReplicas: simulate projects pipeline.replicas: it prints the
// lanes, the chain's gradient sum, the replica traffic and the tokens/s;
// the JSON carries the same figures; and with one replica none of it.
func TestSimulateReplicas(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "swarm.toml", strings.Replace(swarmTOML, "%s", filepath.Join(data.GoRoot(), "src", "strings"), 1))
	code, stdout, stderr := narrowband(t, "simulate", cfg, "--set", "pipeline.replicas=2")
	if code != 0 {
		t.Fatalf("simulate failed (%d):\n%s", code, stderr)
	}
	for _, want := range []string{"replicas: 2 a stage, 2 micro-batches on the busiest lane", "lane step", "gradient sum (chain of 2, fp32, 20 Mbit/s, 10 ms)", "MB a step of replica traffic", "tokens/s", "= gradient sum"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("simulate output lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, stderr = narrowband(t, "simulate", cfg, "--set", "pipeline.replicas=2", "--json")
	if code != 0 {
		t.Fatalf("simulate --json failed (%d):\n%s", code, stderr)
	}
	var p struct {
		Replicas  int     `json:"replicas"`
		LaneMicro int     `json:"lane_micro_batches"`
		Step      float64 `json:"step_seconds"`
		Lane      float64 `json:"lane_step_seconds"`
		Sum       float64 `json:"replica_sum_seconds"`
		Grad      []int64 `json:"replica_gradient_bytes"`
		Bytes     int64   `json:"replica_bytes_per_step"`
		Tokens    float64 `json:"tokens_per_second"`
	}
	if err := json.Unmarshal([]byte(stdout), &p); err != nil {
		t.Fatalf("%v:\n%s", err, stdout)
	}
	// One chain link a stage, each way: 2 × each stage's gradient.
	if p.Replicas != 2 || p.LaneMicro != 2 || len(p.Grad) != 2 || p.Bytes != 2*(p.Grad[0]+p.Grad[1]) {
		t.Errorf("replicas %d, lane micro-batches %d, gradients %v B, %d B a step", p.Replicas, p.LaneMicro, p.Grad, p.Bytes)
	}
	// At 20 Mbit/s the sum takes at least one gradient's serialization
	// plus a round trip, and the step at least the lanes' step.
	if minSum := float64(p.Grad[0])*8/20e6 + 0.020; p.Sum < minSum || p.Step < p.Lane || !(p.Tokens > 0) {
		t.Errorf("sum %.4f s (want ≥ %.4f), step %.4f s, lanes %.4f s, %.0f tokens/s", p.Sum, minSum, p.Step, p.Lane, p.Tokens)
	}
	code, stdout, stderr = narrowband(t, "simulate", cfg)
	if code != 0 {
		t.Fatalf("simulate with one replica failed (%d):\n%s", code, stderr)
	}
	if strings.Contains(stdout, "replicas:") || strings.Contains(stdout, "gradient sum") {
		t.Errorf("one replica, yet the output projects a swarm:\n%s", stdout)
	}
}
