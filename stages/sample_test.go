package stages

import (
	"errors"
	"math/rand/v2"
	"testing"
)

func TestSample(t *testing.T) {
	cfg := tinyConfig(true)
	s, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	perturb(s, 3)
	ctx := []int32{1, 2, 3, 4, 5, 6, 7, 8} // longer than BlockSize: cropped
	logits, _ := s.ForwardLogits(0, 1, 6, ctx[2:], nil)
	V := cfg.VocabSize
	last := logits[5*V:]
	best, second := 0, -1
	for i := range last {
		if last[i] > last[best] {
			best = i
		}
	}
	for i := range last {
		if i != best && (second < 0 || last[i] > last[second]) {
			second = i
		}
	}
	if g, _ := Sample(s, ctx, 0, 0, nil); int(g) != best {
		t.Errorf("greedy sample %d, argmax %d", g, best)
	}
	r := rand.New(rand.NewPCG(1, 1))
	seen := map[int32]int{}
	for i := 0; i < 200; i++ {
		x, err := Sample(s, ctx, 1, 2, r)
		if err != nil {
			t.Fatal(err)
		}
		seen[x]++
	}
	if len(seen) != 2 || seen[int32(best)] == 0 || seen[int32(second)] == 0 {
		t.Errorf("top-2 sampling drew %v, want only %d and %d", seen, best, second)
	}
	a, _ := Generate(s, []int32{1}, 10, 1, 0, 9)
	b, _ := Generate(s, []int32{1}, 10, 1, 0, 9)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed generated %v and %v", a, b)
		}
	}
	part, _ := NewStage(cfg, 0, 1, true, false, 1, 1)
	if _, err := Sample(part, ctx, 1, 0, r); !errors.Is(err, ErrNotWhole) {
		t.Errorf("sampling from a first stage only: %v", err)
	}
}
