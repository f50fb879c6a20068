package config

import (
	"strings"
	"testing"

	"github.com/narrowband/narrowband/compression"
)

func TestVerifyValidate(t *testing.T) {
	swarm := func(c *Config) {
		c.Pipeline.Stages, c.Pipeline.Replicas = 2, 2
		c.Train.MicroBatches = 4
		c.Model.NLayer = 2
	}
	for _, tc := range []struct {
		name string
		set  func(c *Config)
		want string // "" valid
	}{
		{"checks in a swarm", func(c *Config) { swarm(c); c.Verify.Fraction = 0.1 }, ""},
		{"fraction above 1", func(c *Config) { swarm(c); c.Verify.Fraction = 1.5 }, "verify.fraction = 1.5"},
		{"no replicas", func(c *Config) { c.Verify.Fraction = 0.1 }, "needs pipeline.replicas ≥ 2"},
		{"max mismatches 0", func(c *Config) { swarm(c); c.Verify.MaxMismatches = 0 }, "verify.max_mismatches = 0"},
		{"stateful codec", func(c *Config) {
			swarm(c)
			c.Verify.Fraction = 0.1
			c.Compression.Method, c.Compression.Rank = compression.MethodLowRank, 8
		}, "keeps per-link state"},
		{"browser peers", func(c *Config) {
			swarm(c)
			c.Verify.Fraction = 0.1
			c.Web.Contribute = true
			c.Pipeline.Transport = "webrtc"
		}, "browser peer's kernels"},
		{"lie", func(c *Config) {
			swarm(c)
			c.Faults.Events = []FaultEvent{{AtStep: 1, Kind: "lie", Stage: 0, Replica: 1, Fraction: 0.1, Scale: 0.01}}
		}, ""},
		{"lie without replicas", func(c *Config) {
			c.Pipeline.Stages, c.Model.NLayer = 2, 2
			c.Faults.Events = []FaultEvent{{AtStep: 1, Kind: "lie", Fraction: 0.1, Scale: 0.01}}
		}, "needs pipeline.replicas ≥ 2"},
		{"lie on the last stage", func(c *Config) {
			swarm(c)
			c.Faults.Events = []FaultEvent{{AtStep: 1, Kind: "lie", Stage: 1, Fraction: 0.1, Scale: 0.01}}
		}, "faults.event[0].stage = 1"},
		{"lie of no share", func(c *Config) {
			swarm(c)
			c.Faults.Events = []FaultEvent{{AtStep: 1, Kind: "lie", Scale: 0.01}}
		}, "faults.event[0].fraction = 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.set(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
