package compression

import (
	"errors"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		key  string
	}{
		{"unknown method", func(c *Config) { c.Method = MethodUnknown }, "compression.method"},
		{"no rank for lowrank", func(c *Config) { c.Method, c.Rank = MethodLowRank, 0 }, "compression.rank = (unset)"},
		{"no rank for subspace", func(c *Config) { c.Method, c.Rank = MethodSubspace, 0 }, "compression.rank = (unset)"},
		{"negative rank", func(c *Config) { c.Method, c.Rank = MethodLowRank, -7 }, "compression.rank = -7"},
		{"untied head without subspace", func(c *Config) { c.UntieHead = true }, "compression.untie_head"},
		{"auto rank on topk", func(c *Config) { c.Method, c.Rank = MethodTopK, RankAuto }, `compression.rank = "auto"`},
		{"k fraction", func(c *Config) { c.KFraction = 1.5 }, "compression.topk = 1.5"},
		{"block size", func(c *Config) { c.BlockSize = 0 }, "compression.block_size = 0"},
		{"int8 precision on lowrank", func(c *Config) { c.Precision = Int8 }, `compression.precision = "int8"`},
		{"int4 precision on lowrank", func(c *Config) { c.Precision = Int4 }, `compression.precision = "int4"`},
		{"int6 precision on topk", func(c *Config) { c.Method, c.Precision = MethodTopK, Int6 }, `compression.precision = "int6"`},
		{"unknown precision", func(c *Config) { c.Precision = 0 }, "compression.precision"},
		{"power iters", func(c *Config) { c.PowerIters = 0 }, "compression.power_iters = 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.key) {
				t.Errorf("Validate() = %v, want ErrConfig naming %q", err, tc.key)
			}
			if _, err := New(c, 64, 256, 1); err == nil {
				t.Errorf("New accepted an invalid config")
			}
		})
	}
}

func TestConfigTOML(t *testing.T) {
	for _, tc := range []struct {
		src    string
		method Method
		rank   Rank
		prec   Precision
	}{
		{"method = \"lowrank\"\nrank = \"auto\"\nprecision = \"bf16\"", MethodLowRank, RankAuto, BF16},
		{"method = \"SUBSPACE\"\nrank = 16\nprecision = \"int8\"", MethodSubspace, 16, Int8},
		{"method = \"subspace\"\nrank = 56\nprecision = \"int4\"", MethodSubspace, 56, Int4},
		{"method = \"subspace\"\nrank = 38\nprecision = \"INT6\"", MethodSubspace, 38, Int6},
	} {
		c := DefaultConfig()
		if _, err := toml.Decode(tc.src, &c); err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		if c.Method != tc.method || c.Rank != tc.rank || c.Precision != tc.prec {
			t.Errorf("%q decoded to %v %v %v", tc.src, c.Method, c.Rank, c.Precision)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%q: %v", tc.src, err)
		}
	}
	for _, bad := range []string{`method = "zip"`, `rank = "most"`, `rank = -3`, `precision = "fp8"`} {
		c := DefaultConfig()
		if _, err := toml.Decode(bad, &c); err == nil {
			t.Errorf("%q decoded without error", bad)
		}
	}
}

func TestNewBuildsEveryMethod(t *testing.T) {
	for m := MethodNone; m <= MethodSubspace; m++ {
		c := DefaultConfig()
		c.Method = m
		if m.UsesRank() {
			c.Rank = 16
		}
		codec, err := New(c, 64, 256, 1)
		if err != nil {
			t.Fatalf("%v: %v", m, err)
		}
		if codec.ID() != m.ID() {
			t.Errorf("%v: codec ID %v, want %v", m, codec.ID(), m.ID())
		}
		if got, err := ParseMethod(m.String()); err != nil || got != m {
			t.Errorf("ParseMethod(%q) = %v, %v", m.String(), got, err)
		}
		if _, ok := codec.(TokenCodec); ok != (m == MethodSubspace) {
			t.Errorf("%v: TokenCodec = %v", m, ok)
		}
	}
	c := DefaultConfig()
	c.Method, c.Rank = MethodSubspace, 65
	if _, err := New(c, 64, 256, 1); !errors.Is(err, ErrConfig) {
		t.Errorf("subspace k > d: err = %v, want ErrConfig", err)
	}
}

func TestConfigSet(t *testing.T) {
	c := DefaultConfig()
	for _, kv := range [][2]string{
		{"method", "topk"}, {"rank", ""}, {"topk", "0.05"}, {"block_size", "128"},
		{"precision", "bf16"}, {"power_iters", "2"}, {"error_feedback", "false"}, {"lz4", "true"},
		{"step", "0.25"}, {"grad_step", "1.25"}, {"rotation", "sent"}, {"rotation_interval", "8"}, {"predictor_decay", "0.05"},
		{"target_bytes_per_token", "9.5"}, {"tied_precision", "int8"},
		{"replicas.method", "powersgd"}, {"replicas.rank", "8"}, {"replicas.error_feedback", "false"},
	} {
		if err := c.Set(kv[0], kv[1]); err != nil {
			t.Fatalf("Set(%q, %q): %v", kv[0], kv[1], err)
		}
	}
	want := Config{Method: MethodTopK, Rank: 0, KFraction: 0.05, BlockSize: 128, Precision: BF16, PowerIters: 2, LZ4: true,
		Step: 0.25, GradStep: 1.25, Rotation: RotationSent, RotationInterval: 8, PredictorDecay: 0.05,
		TargetBytesPerToken: 9.5, TiedPrecision: Int8,
		Replicas: ReduceConfig{Method: ReducePowerSGD, Rank: 8}}
	if c != want {
		t.Errorf("after Set: %+v, want %+v", c, want)
	}
	for _, kv := range [][2]string{{"rank", "x"}, {"topk", "lots"}, {"speed", "1"}, {"lz4", "maybe"}, {"rotation", "spin"}, {"step", "big"}, {"replicas.method", "bf16"}, {"replicas.rank", "four"}} {
		err := c.Set(kv[0], kv[1])
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "compression."+kv[0]) {
			t.Errorf("Set(%q, %q) = %v, want ErrConfig naming the key", kv[0], kv[1], err)
		}
	}
}
