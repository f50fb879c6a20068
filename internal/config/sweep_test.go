package config

import (
	"strings"
	"testing"
)

// TestOnlyVariants: --only keeps the named variants in the file's order,
// each still crossed with the [sweep] lists, and a name the file lacks is
// an error that lists the names it has.
func TestOnlyVariants(t *testing.T) {
	c := Default()
	c.Sweep = map[string]any{"run.seed": []any{int64(1), int64(2)}}
	c.Variant = []map[string]any{{"name": "a", "train.learning_rate": 1e-3}, {"name": "b", "train.learning_rate": 2e-3}, {"name": "c", "train.learning_rate": 3e-3}}
	if err := c.OnlyVariants([]string{"c,a"}); err != nil {
		t.Fatal(err)
	}
	vs, err := c.Variants()
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 4 || vs[0].Config.Train.LearningRate != 1e-3 || vs[3].Config.Train.LearningRate != 3e-3 {
		t.Fatalf("got %d variants %+v, want a and c over both seeds", len(vs), vs)
	}
	err = c.OnlyVariants([]string{"zz"})
	if err == nil || !strings.Contains(err.Error(), "zz") || !strings.Contains(err.Error(), "this file has: a, c") {
		t.Fatalf("err = %v, want one naming zz and the variants there are", err)
	}
}
