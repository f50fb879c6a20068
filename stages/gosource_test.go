package stages

import (
	"hash/fnv"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTrainGoSource trains a small GPT on the Go standard library's source
// and reports held-out loss in nats/byte (DESIGN.md's reference points on
// a 1% held-out split by file: bigram 3.03, trigram 2.41, 4-gram 2.11).
// It takes minutes, so it runs only with NARROWBAND_LONG=1;
// NARROWBAND_STEPS sets the step count (default 300).
func TestTrainGoSource(t *testing.T) {
	if os.Getenv("NARROWBAND_LONG") != "1" {
		t.Skip("long training run: set NARROWBAND_LONG=1")
	}
	steps := 300
	if s, err := strconv.Atoi(os.Getenv("NARROWBAND_STEPS")); err == nil {
		steps = s
	}
	var train, held []byte
	root := filepath.Join(runtime.GOROOT(), "src")
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || strings.Contains(p, "testdata") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		h := fnv.New32a()
		h.Write([]byte(p))
		if h.Sum32()%100 == 0 {
			held = append(held, b...)
		} else {
			train = append(train, b...)
		}
		return nil
	})
	t.Logf("train %d bytes, held-out %d bytes", len(train), len(held))
	cfg := Config{NLayer: 4, NHead: 4, NEmbd: 128, BlockSize: 128, VocabSize: 256, Bias: false}
	B, T := 16, cfg.BlockSize
	s, err := NewStage(cfg, 0, cfg.NLayer, true, true, B, 1)
	if err != nil {
		t.Fatal(err)
	}
	opt, _ := NewAdamW(s.Params(), DefaultAdamWConfig())
	r := rand.New(rand.NewPCG(1, 2))
	tok, tgt := make([]int32, B*T), make([]int32, B*T)
	batch := func(src []byte) {
		for b := 0; b < B; b++ {
			o := r.IntN(len(src) - T - 1)
			for i := 0; i < T; i++ {
				tok[b*T+i], tgt[b*T+i] = int32(src[o+i]), int32(src[o+i+1])
			}
		}
	}
	eval := func() float64 {
		var sum float64
		for i := 0; i < 20; i++ {
			batch(held)
			l, _ := s.ForwardLoss(0, B, T, tok, nil, tgt)
			sum += float64(l)
		}
		return sum / 20
	}
	start := time.Now()
	for step := 0; step <= steps; step++ {
		if step%50 == 0 {
			t.Logf("step %4d  held-out loss %.3f nats/byte  (%.0f tokens/s)", step, eval(), float64(step*B*T)/time.Since(start).Seconds())
		}
		// nanoGPT-style schedule: linear warmup, cosine decay to lr/10.
		lr := 3e-3 * math.Min(1, float64(step+1)/50)
		if step > 50 {
			lr = 3e-4 + 0.5*(3e-3-3e-4)*(1+math.Cos(math.Pi*float64(step-50)/float64(steps-50)))
		}
		batch(train)
		s.ZeroGrad()
		s.ForwardLoss(0, B, T, tok, nil, tgt)
		s.Backward(0, nil, 1)
		ScaleGrads(s.Params(), ClipScale(s.GradSumSquares(), 1))
		opt.Step(float32(lr))
	}
	if l := eval(); l > 3.03 {
		t.Errorf("held-out loss %.3f after %d steps: not better than a bigram model (3.03)", l, steps)
	}
}
