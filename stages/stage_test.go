package stages

import (
	"errors"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func tinyConfig(bias bool) Config {
	return Config{NLayer: 3, NHead: 2, NEmbd: 8, BlockSize: 6, VocabSize: 11, Bias: bias}
}

func randTokens(r *rand.Rand, n, V int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(r.IntN(V))
	}
	return t
}

// tiedName is the first stage's name of the tied embedding.
func tiedName(cfg Config) string {
	if cfg.Family == FamilyLlama {
		return llamaEmbedName
	}
	return wteName
}

// perturb moves every weight away from nanoGPT's init (zero biases, unit
// LayerNorm) so that every gradient path is exercised. Like the init it
// depends on the tensor name only, so split models stay identical.
func perturb(s *Stage, seed uint64) {
	for _, p := range s.Params() {
		key := p.Name
		if key == lmHeadName && s.cfg.Tied() {
			key = tiedName(s.cfg)
		}
		h := fnv.New64a()
		h.Write([]byte(key))
		r := rand.New(rand.NewPCG(seed, h.Sum64()))
		for i := range p.Data {
			p.Data[i] += float32(r.NormFloat64() * 0.3)
		}
	}
}

// End-to-end gradient check of a whole tiny model against central
// differences of an independent float64 forward pass (ref64_test.go).
// The float32 loss must match the float64 one to 1e-5 relative; the
// analytic float32 gradient g of every parameter tensor (sampled entries,
// all of them for small tensors) must match the float64 finite difference
// fd (step 1e-6) to |g − fd| ≤ 1e-4·max|g of that tensor| + 1e-3·|fd|:
// float32 rounding, not the finite difference, sets that tolerance.
func TestStageGradEndToEnd(t *testing.T) {
	for _, bias := range []bool{true, false} {
		cfg := tinyConfig(bias)
		s, err := NewStage(cfg, 0, cfg.NLayer, true, true, 2, 1)
		if err != nil {
			t.Fatal(err)
		}
		perturb(s, 1)
		r := rand.New(rand.NewPCG(5, 5))
		B, T := 2, cfg.BlockSize
		tokens, targets := randTokens(r, B*T, cfg.VocabSize), randTokens(r, B*T, cfg.VocabSize)
		loss, err := s.ForwardLoss(0, B, T, tokens, nil, targets)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Backward(0, nil, 1); err != nil {
			t.Fatal(err)
		}
		ref := newRef64(cfg, s.Params())
		want := ref.loss(B, T, tokens, targets)
		if rel := math.Abs(float64(loss)-want) / want; rel > 1e-5 {
			t.Errorf("bias=%v: loss %v, float64 reference %v (rel %g)", bias, loss, want, rel)
		}
		const eps = 1e-6
		for _, p := range s.Params() {
			gmax := 0.0
			for _, g := range p.Grad {
				gmax = math.Max(gmax, math.Abs(float64(g)))
			}
			pv := ref.p[p.Name]
			stride := max(1, len(pv)/40)
			for i := 0; i < len(pv); i += stride {
				o := pv[i]
				pv[i] = o + eps
				lp := ref.loss(B, T, tokens, targets)
				pv[i] = o - eps
				lm := ref.loss(B, T, tokens, targets)
				pv[i] = o
				fd := (lp - lm) / (2 * eps)
				g := float64(p.Grad[i])
				if math.Abs(g-fd) > 1e-4*gmax+1e-3*math.Abs(fd) {
					t.Errorf("bias=%v %s[%d]: grad %.7g, finite difference %.7g", bias, p.Name, i, g, fd)
				}
			}
		}
	}
}

// split runs the model cut at the given block boundaries, stage by stage in
// this goroutine, for M micro-batches, and returns the summed loss and all
// stages (gradients accumulated, tied gradients summed as the runtime does).
func runSplit(t *testing.T, cfg Config, cuts []int, B, T int, toks, tgts [][]int32) (float32, []*Stage) {
	t.Helper()
	bounds := append(append([]int{0}, cuts...), cfg.NLayer)
	var ss []*Stage
	for i := 0; i+1 < len(bounds); i++ {
		s, err := NewStage(cfg, bounds[i], bounds[i+1], i == 0, i+2 == len(bounds), B, len(toks))
		if err != nil {
			t.Fatal(err)
		}
		perturb(s, 1)
		ss = append(ss, s)
	}
	var total float32
	M := len(toks)
	// All forwards first (GPipe order), so several slots are in flight.
	for m := 0; m < M; m++ {
		var x []float32
		for i, s := range ss {
			var err error
			if i+1 < len(ss) {
				x, err = s.Forward(m, B, T, toks[m], x)
			} else {
				var l float32
				l, err = s.ForwardLoss(m, B, T, toks[m], x, tgts[m])
				total += l / float32(M)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for m := M - 1; m >= 0; m-- {
		var d []float32
		for i := len(ss) - 1; i >= 0; i-- {
			var err error
			d, err = ss[i].Backward(m, d, 1/float32(M))
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(ss) > 1 && cfg.Tied() {
		a, b := ss[0].TiedWeight(), ss[len(ss)-1].TiedWeight()
		for i := range a.Grad {
			g := a.Grad[i] + b.Grad[i]
			a.Grad[i], b.Grad[i] = g, g
		}
	}
	return total, ss
}

func TestSplitMatchesWhole(t *testing.T) {
	cfg := tinyConfig(true)
	r := rand.New(rand.NewPCG(8, 8))
	B, T, M := 2, 5, 2
	var toks, tgts [][]int32
	for m := 0; m < M; m++ {
		toks = append(toks, randTokens(r, B*T, cfg.VocabSize))
		tgts = append(tgts, randTokens(r, B*T, cfg.VocabSize))
	}
	wholeLoss, whole := runSplit(t, cfg, nil, B, T, toks, tgts)
	wg := map[string][]float32{}
	for _, p := range whole[0].Params() {
		wg[p.Name] = p.Grad
	}
	wg[lmHeadName] = wg[wteName]
	for _, cuts := range [][]int{{1}, {2}, {1, 2}, {0 + 1, 3}} {
		loss, ss := runSplit(t, cfg, cuts, B, T, toks, tgts)
		if loss != wholeLoss {
			t.Errorf("cuts %v: loss %v, whole model %v", cuts, loss, wholeLoss)
		}
		seen := 0
		for _, s := range ss {
			for _, p := range s.Params() {
				want := wg[p.Name]
				// Bit-identical, except the tied embedding over M > 1
				// micro-batches: the whole model interleaves LM-head and
				// embedding contributions, a split sums each side first
				// and then adds, so float additions differ in order.
				tol := 0.0
				if p.Name == wteName || p.Name == lmHeadName {
					tol = 1e-6 * maxAbs(want)
				}
				for i := range p.Grad {
					if math.Abs(float64(p.Grad[i])-float64(want[i])) > tol {
						t.Errorf("cuts %v: %s[%d] grad %v, whole model %v", cuts, p.Name, i, p.Grad[i], want[i])
						break
					}
				}
				seen++
			}
		}
		if want := len(whole[0].Params()) + 1; seen != want {
			t.Errorf("cuts %v: %d tensors across stages, want %d", cuts, seen, want)
		}
	}
}

func TestInitIndependentOfSplit(t *testing.T) {
	cfg := tinyConfig(true)
	whole, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	a, _ := NewStage(cfg, 0, 1, true, false, 1, 1)
	b, _ := NewStage(cfg, 1, 3, false, true, 1, 1)
	w := map[string][]float32{}
	for _, p := range whole.Params() {
		w[p.Name] = p.Data
	}
	w[lmHeadName] = w[wteName]
	for _, s := range []*Stage{a, b} {
		for _, p := range s.Params() {
			for i := range p.Data {
				if p.Data[i] != w[p.Name][i] {
					t.Fatalf("%s[%d] = %v in a split, %v in the whole model", p.Name, i, p.Data[i], w[p.Name][i])
				}
			}
		}
	}
	// nanoGPT's init statistics: std 0.02, residual projections scaled.
	std := func(v []float32) float64 {
		s := 0.0
		for _, x := range v {
			s += float64(x) * float64(x)
		}
		return math.Sqrt(s / float64(len(v)))
	}
	big, _ := NewStage(Config{NLayer: 2, NHead: 4, NEmbd: 64, BlockSize: 8, VocabSize: 256, Bias: true}, 0, 2, true, true, 1, 1)
	for _, p := range big.Params() {
		var want float64
		switch p.Name {
		case "transformer.h.1.mlp.c_proj.weight", "transformer.h.0.attn.c_proj.weight":
			want = 0.02 / 2
		case wteName, "transformer.h.1.mlp.c_fc.weight":
			want = 0.02
		case "transformer.h.0.ln_1.bias":
			want = 0
		default:
			continue
		}
		if got := std(p.Data); math.Abs(got-want) > 0.1*want+1e-9 {
			t.Errorf("%s: rms %v, want %v", p.Name, got, want)
		}
	}
	if got := big.Params()[len(big.Params())-2].Data[0]; got != 1 {
		t.Errorf("ln_f.weight[0] = %v, want 1", got)
	}
}

func TestParamNamesMatchNanoGPT(t *testing.T) {
	cfg := Config{NLayer: 2, NHead: 2, NEmbd: 4, BlockSize: 3, VocabSize: 5, Bias: true}
	s, _ := NewStage(cfg, 0, 2, true, true, 1, 1)
	var n int64
	for _, p := range s.Params() {
		n += int64(p.Size())
	}
	if n != cfg.NumParams() {
		t.Errorf("stage holds %d parameters, NumParams says %d", n, cfg.NumParams())
	}
	want := map[string][]int{
		wteName: {5, 4}, wpeName: {3, 4},
		"transformer.h.1.attn.c_attn.weight": {12, 4}, "transformer.h.1.attn.c_attn.bias": {12},
		"transformer.h.0.mlp.c_fc.weight": {16, 4}, "transformer.h.0.mlp.c_proj.weight": {4, 16},
		"transformer.ln_f.bias": {4},
	}
	got := map[string]*Param{}
	for _, p := range s.Params() {
		got[p.Name] = p
	}
	for name, shape := range want {
		p := got[name]
		if p == nil {
			t.Errorf("no %s", name)
			continue
		}
		if len(p.Shape) != len(shape) || p.Shape[0] != shape[0] {
			t.Errorf("%s shape %v, want %v", name, p.Shape, shape)
		}
	}
	if !got["transformer.h.0.attn.c_attn.weight"].Decay || got[wteName].Decay || got["transformer.h.0.ln_1.weight"].Decay || got["transformer.h.0.attn.c_attn.bias"].Decay {
		t.Error("decay must be on 2-D weight matrices only, not embeddings, biases or LayerNorm")
	}
	cfg.Bias = false
	s, _ = NewStage(cfg, 0, 2, true, true, 1, 1)
	for _, p := range s.Params() {
		if len(p.Name) > 5 && p.Name[len(p.Name)-5:] == ".bias" {
			t.Errorf("bias=false model has %s", p.Name)
		}
	}
	if s.TiedWeight() != got[wteName] && &s.TiedWeight().Data[0] != &s.wte.Data[0] {
		t.Error("whole model's tied weight is not the embedding buffer")
	}
}

func TestStageBadInput(t *testing.T) {
	cfg := tinyConfig(true)
	first, _ := NewStage(cfg, 0, 1, true, false, 2, 2)
	last, _ := NewStage(cfg, 1, 3, false, true, 2, 2)
	C := cfg.NEmbd
	tok := make([]int32, 2*3)
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"slot", func() error { _, e := first.Forward(2, 2, 3, tok, nil); return e }(), ErrBadSlot},
		{"batch too big", func() error { _, e := first.Forward(0, 3, 2, tok, nil); return e }(), ErrBadShape},
		{"T over block size", func() error { _, e := first.Forward(0, 1, 7, make([]int32, 7), nil); return e }(), ErrBadShape},
		{"token out of range", func() error { _, e := first.Forward(0, 2, 3, []int32{0, 1, 11, 0, 0, 0}, nil); return e }(), ErrBadTokens},
		{"negative token", func() error { _, e := first.Forward(0, 2, 3, []int32{0, -1, 1, 0, 0, 0}, nil); return e }(), ErrBadTokens},
		{"short tokens", func() error { _, e := first.Forward(0, 2, 3, tok[:5], nil); return e }(), ErrBadLength},
		{"short input", func() error { _, e := last.ForwardLoss(0, 2, 3, nil, make([]float32, 6*C-1), tok); return e }(), ErrBadLength},
		{"bad target", func() error {
			_, e := last.ForwardLoss(0, 2, 3, nil, make([]float32, 6*C), []int32{0, 0, 0, 0, 0, 99})
			return e
		}(), ErrBadTokens},
		{"forward on last", func() error { _, e := last.Forward(0, 2, 3, nil, make([]float32, 6*C)); return e }(), ErrLast},
		{"loss on non-last", func() error { _, e := first.ForwardLoss(0, 2, 3, tok, nil, tok); return e }(), ErrNotLast},
		{"backward before forward", func() error { _, e := last.Backward(1, nil, 1); return e }(), ErrSlotEmpty},
		{"short dout", func() error {
			if _, e := first.Forward(0, 2, 3, tok, nil); e != nil {
				return e
			}
			_, e := first.Backward(0, make([]float32, 3), 1)
			return e
		}(), ErrBadLength},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, c.err, c.want)
		}
	}
	if _, err := NewStage(cfg, 1, 3, true, true, 1, 1); !errors.Is(err, ErrBadStaging) {
		t.Errorf("first stage starting at block 1: %v", err)
	}
	if _, err := NewStage(Config{NLayer: 1, NHead: 3, NEmbd: 8, BlockSize: 4, VocabSize: 2, Dropout: 0.1}, 0, 1, true, true, 1, 1); err == nil {
		t.Error("n_embd 8 with 3 heads and dropout 0.1 accepted")
	}
}

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(float64(x)))
	}
	return m
}

func TestNewStageRefusesHugeShapes(t *testing.T) {
	cfg := Config{NLayer: 8, NHead: 1, NEmbd: 65536, BlockSize: 65536, VocabSize: 256}
	if err := cfg.Validate(); err == nil {
		t.Fatal("a 2^31+ parameter model validated")
	}
	cfg = Config{NLayer: 1, NHead: 1, NEmbd: 1024, BlockSize: 65536, VocabSize: 256}
	if _, err := NewStage(cfg, 0, 1, true, true, 65536, 1024); !errors.Is(err, ErrBadShape) || !strings.Contains(err.Error(), "GB") {
		t.Errorf("a stage needing petabytes of activations: %v", err)
	}
}

func TestAccessors(t *testing.T) {
	cfg := tinyConfig(true)
	s, _ := NewStage(cfg, 1, 3, false, true, 3, 2)
	if s.Slots() != 2 || s.MaxBatch() != 3 || s.Config() != cfg {
		t.Errorf("Slots %d MaxBatch %d Config %+v", s.Slots(), s.MaxBatch(), s.Config())
	}
	if lo, hi, f, l := s.Range(); lo != 1 || hi != 3 || f || !l {
		t.Errorf("Range %d %d %v %v", lo, hi, f, l)
	}
	if p := s.Param("transformer.h.2.mlp.c_fc.bias"); p == nil || p.Size() != 4*cfg.NEmbd {
		t.Errorf("Param lookup: %v", p)
	}
	if s.Param("transformer.h.0.mlp.c_fc.bias") != nil || s.TiedWeight() != s.Param(lmHeadName) {
		t.Error("last stage holds block 0 or its tied weight is not lm_head.weight")
	}
	if n := MemoryBytes(cfg, 1, 3, false, true, 3, 2); n < float64(4*2*s.NumParams()) {
		t.Errorf("MemoryBytes %v below the parameters and gradients alone", n)
	}
}
