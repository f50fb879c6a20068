package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestValuesThatAreNotNumbersAreRefused: NaN and infinities pass naive range
// checks; every float key refuses them at load, naming key and line.
func TestValuesThatAreNotNumbersAreRefused(t *testing.T) {
	for _, tc := range []struct{ section, key, value string }{
		{"train", "min_lr", "nan"},
		{"train", "grad_clip", "nan"},
		{"train", "weight_decay", "inf"},
		{"train", "learning_rate", "-inf"},
		{"train", "beta1", "nan"},
		{"train", "eps", "inf"},
		{"train", "checkpoint_minutes", "nan"},
		{"data", "val_fraction", "nan"},
		{"network", "latency_ms", "inf"},
		{"compression", "topk", "nan"},
		{"faults", "peer_timeout", "inf"},
		{"simulate", "speedup", "nan"},
	} {
		t.Run(tc.section+"."+tc.key, func(t *testing.T) {
			_, path, err := load(t, "[run]\nname = \"x\"\n\n["+tc.section+"]\n"+tc.key+" = "+tc.value+"\n")
			want := path + ":5: " + tc.section + "." + tc.key + " = "
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%s = %s: %v, want a refusal starting %q", tc.key, tc.value, err, want)
			}
		})
	}
}

// TestSeedsAreUnsigned: a negative seed is refused instead of wrapping to
// 2^64-1; the largest seeds are written as strings so the run's own
// config.toml loads again.
func TestSeedsAreUnsigned(t *testing.T) {
	if _, _, err := load(t, "[run]\nseed = -1\n"); err == nil || !strings.Contains(err.Error(), "run.seed = -1") {
		t.Errorf("seed = -1: %v", err)
	}
	for _, seed := range []string{"0", "1337", "9223372036854775807", `"18446744073709551615"`} {
		c, _, err := load(t, "[run]\nseed = "+seed+"\n")
		if err != nil {
			t.Fatalf("seed = %s: %v", seed, err)
		}
		again := roundTrip(t, c)
		if again.Run.Seed != c.Run.Seed {
			t.Errorf("seed %s: written and read back as %d", seed, again.Run.Seed)
		}
	}
}

// roundTrip writes c as its run would (config.toml) and loads it again.
func roundTrip(t *testing.T, c Config) Config {
	t.Helper()
	text, err := c.TOML()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, text, 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := Load(path, nil)
	if err != nil {
		t.Fatalf("the written config does not load: %v\n%s", err, text)
	}
	return again
}

// TestWrittenConfigsLoadAgain: the config.toml of every run the repository's
// experiments make — every variant of every file — loads back equal.
func TestWrittenConfigsLoadAgain(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "experiments", "*.toml"))
	if len(files) == 0 {
		t.Fatal("no experiment files found")
	}
	for _, f := range files {
		c, err := Load(f, nil)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vs, err := c.Variants()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, v := range vs {
			if again := roundTrip(t, v.Config); !reflect.DeepEqual(again, v.Config) {
				t.Errorf("%s variant %q: the written config loads back different:\n%+v\n%+v", f, v.Name, again, v.Config)
			}
		}
	}
}
