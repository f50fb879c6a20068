package stages

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"testing"
)

// tinyLlama is the gradient-check shape: grouped-query attention (4 query
// heads on 2 key/value heads), SwiGLU width not a multiple of 8, a
// vocabulary past 256.
func tinyLlama(untied bool) Config {
	return Config{Family: FamilyLlama, NLayer: 3, NHead: 4, NKVHead: 2, NEmbd: 16, BlockSize: 6, VocabSize: 300,
		IntermediateSize: 12, RopeTheta: 10000, RMSNormEps: 1e-5, UntiedEmbeddings: untied}
}

// End-to-end gradient check of whole tiny Llamas against central
// differences of the independent float64 forward pass (llama_ref64_test.go),
// with the tolerances of TestStageGradEndToEnd: loss within 1e-5 relative,
// every sampled gradient entry within 1e-4·max|g of its tensor| + 1e-3·|fd|.
func TestLlamaGradEndToEnd(t *testing.T) {
	for _, cfg := range []Config{tinyLlama(false), tinyLlama(true), func() Config {
		c := tinyLlama(false) // multi-head, another theta and eps
		c.NKVHead, c.RopeTheta, c.RMSNormEps, c.VocabSize = 4, 500000, 1e-6, 11
		return c
	}()} {
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
		want := ref.llamaLoss(B, T, tokens, targets)
		name := "kv=" + itoa(cfg.NKVHead) + " untied=" + map[bool]string{true: "1", false: "0"}[cfg.UntiedEmbeddings]
		if rel := math.Abs(float64(loss)-want) / want; rel > 1e-5 {
			t.Errorf("%s: loss %v, float64 reference %v (rel %g)", name, loss, want, rel)
		}
		const eps = 1e-6
		worst := 0.0
		for _, p := range s.Params() {
			gmax := maxAbs(p.Grad)
			pv := ref.p[p.Name]
			stride := max(1, len(pv)/40)
			for i := 0; i < len(pv); i += stride {
				o := pv[i]
				pv[i] = o + eps
				lp := ref.llamaLoss(B, T, tokens, targets)
				pv[i] = o - eps
				lm := ref.llamaLoss(B, T, tokens, targets)
				pv[i] = o
				fd := (lp - lm) / (2 * eps)
				g := float64(p.Grad[i])
				worst = math.Max(worst, math.Abs(g-fd)/(gmax+1e-30))
				if math.Abs(g-fd) > 1e-4*gmax+1e-3*math.Abs(fd) {
					t.Errorf("%s %s[%d]: grad %.7g, finite difference %.7g", name, p.Name, i, g, fd)
				}
			}
		}
		t.Logf("%s: loss %v vs float64 %v; worst |g − fd| / max|g| over tensors %.2g", name, loss, want, worst)
	}
}

// A Llama cut into stages gives the whole model's loss and gradients, bit
// for bit except the tied embedding over several micro-batches (as the
// GPT, TestSplitMatchesWhole).
func TestLlamaSplitMatchesWhole(t *testing.T) {
	for _, untied := range []bool{false, true} {
		cfg := tinyLlama(untied)
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
		if !untied {
			wg[lmHeadName] = wg[llamaEmbedName]
		}
		for _, cuts := range [][]int{{1}, {2}, {1, 2}} {
			loss, ss := runSplit(t, cfg, cuts, B, T, toks, tgts)
			if loss != wholeLoss {
				t.Errorf("untied=%v cuts %v: loss %v, whole model %v", untied, cuts, loss, wholeLoss)
			}
			for _, s := range ss {
				for _, p := range s.Params() {
					want := wg[p.Name]
					tol := 0.0
					if !untied && (p.Name == llamaEmbedName || p.Name == lmHeadName) {
						tol = 1e-6 * maxAbs(want)
					}
					for i := range p.Grad {
						if math.Abs(float64(p.Grad[i])-float64(want[i])) > tol {
							t.Errorf("untied=%v cuts %v: %s[%d] grad %v, whole model %v", untied, cuts, p.Name, i, p.Grad[i], want[i])
							break
						}
					}
				}
			}
			if untied && (ss[0].TiedWeight() != nil || ss[len(ss)-1].TiedWeight() != nil) {
				t.Errorf("untied model has a tied weight")
			}
		}
	}
}

// Names, shapes and order are Hugging Face's LlamaForCausalLM state_dict;
// q, k, v and gate, up are adjacent (the fused products rely on it);
// NumParams counts what a stage holds.
func TestLlamaParamNames(t *testing.T) {
	cfg := tinyLlama(true)
	s, err := NewStage(cfg, 0, cfg.NLayer, true, true, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	var names []string
	for _, p := range s.Params() {
		n += int64(p.Size())
		names = append(names, p.Name)
	}
	if n != cfg.NumParams() {
		t.Errorf("stage holds %d parameters, NumParams says %d", n, cfg.NumParams())
	}
	wantOrder := []string{"model.embed_tokens.weight",
		"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
		"model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
		"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
		"model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight"}
	if strings.Join(names[:len(wantOrder)], " ") != strings.Join(wantOrder, " ") {
		t.Errorf("order %v, want %v…", names[:len(wantOrder)], wantOrder)
	}
	if tail := names[len(names)-2:]; tail[0] != "model.norm.weight" || tail[1] != "lm_head.weight" {
		t.Errorf("last tensors %v, want model.norm.weight, lm_head.weight", tail)
	}
	want := map[string][]int{
		"model.embed_tokens.weight":                      {300, 16},
		"model.layers.2.self_attn.q_proj.weight":         {16, 16},
		"model.layers.2.self_attn.k_proj.weight":         {8, 16},
		"model.layers.2.self_attn.v_proj.weight":         {8, 16},
		"model.layers.2.self_attn.o_proj.weight":         {16, 16},
		"model.layers.1.mlp.gate_proj.weight":            {12, 16},
		"model.layers.1.mlp.down_proj.weight":            {16, 12},
		"model.layers.0.input_layernorm.weight":          {16},
		"model.norm.weight":                              {16},
		"lm_head.weight":                                 {300, 16},
		"model.layers.1.post_attention_layernorm.weight": {16},
	}
	for name, shape := range want {
		p := s.Param(name)
		if p == nil || !sameShape(p.Shape, shape) {
			t.Errorf("%s: %v, want shape %v", name, p, shape)
		}
	}
	for _, p := range s.Params() {
		wantDecay := len(p.Shape) == 2 && p.Name != llamaEmbedName
		if p.Decay != wantDecay {
			t.Errorf("%s decay %v, want %v (2-D projections and an untied head)", p.Name, p.Decay, wantDecay)
		}
	}
	b := s.lblocks[1]
	if &b.qkvw[0] != &b.q.Data[0] || &b.qkvw[len(b.q.Data)] != &b.k.Data[0] || &b.qkvw[len(b.q.Data)+len(b.k.Data)] != &b.v.Data[0] ||
		&b.guw[0] != &b.gate.Data[0] || &b.guw[len(b.gate.Data)] != &b.up.Data[0] || &b.dguw[len(b.gate.Grad)] != &b.up.Grad[0] {
		t.Error("fused views are not the q, k, v / gate, up tensors side by side")
	}
	tied, _ := NewStage(tinyLlama(false), 0, 3, true, true, 1, 1)
	if tied.Param(lmHeadName) != nil || tied.TiedWeight() != tied.Param(llamaEmbedName) || tied.lmHead != tied.wte {
		t.Error("a tied whole Llama has its own lm_head or its head is not the embedding")
	}
	last, _ := NewStage(tinyLlama(false), 2, 3, false, true, 1, 1)
	if last.TiedWeight() == nil || last.TiedWeight() != last.Param(lmHeadName) {
		t.Error("a tied Llama's last stage must hold lm_head.weight as its tied copy")
	}
}

// Hugging Face's init: std 0.02 for every projection and the embedding
// (no depth scaling), RMSNorm weights 1; the same weights in any split.
func TestLlamaInit(t *testing.T) {
	cfg := Config{Family: FamilyLlama, NLayer: 2, NHead: 4, NKVHead: 2, NEmbd: 64, BlockSize: 8, VocabSize: 512,
		IntermediateSize: 176, RopeTheta: 10000, RMSNormEps: 1e-5}
	whole, _ := NewStage(cfg, 0, 2, true, true, 1, 1)
	a, _ := NewStage(cfg, 0, 1, true, false, 1, 1)
	b, _ := NewStage(cfg, 1, 2, false, true, 1, 1)
	w := map[string][]float32{}
	for _, p := range whole.Params() {
		w[p.Name] = p.Data
	}
	w[lmHeadName] = w[llamaEmbedName]
	for _, s := range []*Stage{a, b} {
		for _, p := range s.Params() {
			for i := range p.Data {
				if p.Data[i] != w[p.Name][i] {
					t.Fatalf("%s[%d] = %v in a split, %v in the whole model", p.Name, i, p.Data[i], w[p.Name][i])
				}
			}
		}
	}
	for _, p := range whole.Params() {
		if len(p.Shape) == 1 {
			for _, v := range p.Data {
				if v != 1 {
					t.Fatalf("%s has %v, want all ones", p.Name, v)
				}
			}
			continue
		}
		var sq float64
		for _, v := range p.Data {
			sq += float64(v) * float64(v)
		}
		if rms := math.Sqrt(sq / float64(len(p.Data))); math.Abs(rms-0.02) > 0.002 {
			t.Errorf("%s: rms %v, want 0.02", p.Name, rms)
		}
	}
}

func TestLlamaConfigValidate(t *testing.T) {
	if err := DefaultLlamaConfig().Validate(); err != nil {
		t.Fatalf("DefaultLlamaConfig: %v", err)
	}
	if n := DefaultLlamaConfig().NumParams(); n < 3_200_000 || n > 3_400_000 {
		t.Errorf("DefaultLlamaConfig has %d parameters, want about 3.3M like DefaultConfig (%d)", n, DefaultConfig().NumParams())
	}
	ok := tinyLlama(false)
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"bias", func(c *Config) { c.Bias = true }, "model.bias"},
		{"no kv heads", func(c *Config) { c.NKVHead = 0 }, "model.n_kv_head = 0"},
		{"kv not dividing", func(c *Config) { c.NKVHead = 3 }, "model.n_kv_head = 3: must divide model.n_head"},
		{"intermediate", func(c *Config) { c.IntermediateSize = -1 }, "model.intermediate_size = -1"},
		{"theta", func(c *Config) { c.RopeTheta = 0 }, "model.rope_theta = 0"},
		{"theta inf", func(c *Config) { c.RopeTheta = math.Inf(1) }, "model.rope_theta = +Inf"},
		{"eps", func(c *Config) { c.RMSNormEps = math.NaN() }, "model.rms_norm_eps = NaN"},
		{"odd head", func(c *Config) { c.NEmbd, c.NHead, c.NKVHead = 12, 4, 2 }, "even head size"},
		{"family", func(c *Config) { c.Family = 7 }, "model.family = 7"},
		{"gpt with llama keys", func(c *Config) { c.Family = FamilyGPT2 }, "is a Llama setting but model.family = \"gpt2\""},
	} {
		cfg := ok
		c.edit(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	gpt := DefaultConfig()
	gpt.UntiedEmbeddings = true
	if err := gpt.Validate(); err == nil || !strings.Contains(err.Error(), "model.untied_embeddings") {
		t.Errorf("untied GPT: %v", err)
	}
}

// A GPT config encodes to the JSON it had before families (the checkpoint
// metadata), and a Llama config round-trips with its family by name.
func TestConfigJSON(t *testing.T) {
	js, err := json.Marshal(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"NLayer":4,"NHead":4,"NEmbd":256,"BlockSize":128,"VocabSize":256,"Bias":true,"Dropout":0}`; string(js) != want {
		t.Errorf("GPT config JSON %s, want %s", js, want)
	}
	cfg := tinyLlama(true)
	js, _ = json.Marshal(cfg)
	if !strings.Contains(string(js), `"Family":"llama"`) {
		t.Errorf("Llama config JSON %s lacks the family name", js)
	}
	var back Config
	if err := json.Unmarshal(js, &back); err != nil || back != cfg {
		t.Errorf("round trip: %+v, %v; want %+v", back, err, cfg)
	}
	var f Family
	if err := f.UnmarshalText([]byte("mamba")); err == nil || !strings.Contains(err.Error(), `"llama"`) {
		t.Errorf("unknown family: %v", err)
	}
	if f.UnmarshalText([]byte("")); f != FamilyGPT2 || FamilyLlama.String() != "llama" || Family(9).String() != "Family(9)" {
		t.Error("empty family is not gpt2, or String is wrong")
	}
}

// A Llama training step (two stages, two micro-batches, AdamW) allocates
// nothing, as the GPT's (TestTrainStepAllocatesNothing).
func TestLlamaTrainStepAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates by itself")
	}
	cfg := tinyLlama(true)
	cfg.NEmbd, cfg.BlockSize, cfg.IntermediateSize = 32, 32, 88
	first, _ := NewStage(cfg, 0, 2, true, false, 4, 2)
	last, _ := NewStage(cfg, 2, 3, false, true, 4, 2)
	o1, _ := NewAdamW(first.Params(), DefaultAdamWConfig())
	o2, _ := NewAdamW(last.Params(), DefaultAdamWConfig())
	r := rand.New(rand.NewPCG(1, 1))
	B, T := 4, 32
	tok, tgt := randTokens(r, B*T, cfg.VocabSize), randTokens(r, B*T, cfg.VocabSize)
	step := func() {
		first.ZeroGrad()
		last.ZeroGrad()
		for m := 0; m < 2; m++ {
			x, _ := first.Forward(m, B, T, tok, nil)
			last.ForwardLoss(m, B, T, nil, x, tgt)
		}
		for m := 0; m < 2; m++ {
			d, _ := last.Backward(m, nil, 0.5)
			first.Backward(m, d, 0)
		}
		o1.Step(1e-3)
		o2.Step(1e-3)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for i := 0; i < 3; i++ {
		step()
	}
	if n := testing.AllocsPerRun(10, step); n > 1 {
		t.Errorf("a Llama training step allocates %v times, want 0", n)
	}
}

// A small Llama learns a repeating text, as the GPT does
// (TestTrainingLearnsPattern).
func TestLlamaLearnsPattern(t *testing.T) {
	cfg := Config{Family: FamilyLlama, NLayer: 2, NHead: 2, NKVHead: 1, NEmbd: 32, BlockSize: 16, VocabSize: 256,
		IntermediateSize: 88, RopeTheta: 10000, RMSNormEps: 1e-5}
	s, err := NewStage(cfg, 0, 2, true, true, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	opt, _ := NewAdamW(s.Params(), DefaultAdamWConfig())
	text := []byte("the quick brown fox jumps over the lazy dog. ")
	B, T := 4, cfg.BlockSize
	r := rand.New(rand.NewPCG(1, 2))
	tok, tgt := make([]int32, B*T), make([]int32, B*T)
	var first, loss float32
	for step := 0; step < 300; step++ {
		for b := 0; b < B; b++ {
			o := r.IntN(len(text))
			for i := 0; i < T; i++ {
				tok[b*T+i] = int32(text[(o+i)%len(text)])
				tgt[b*T+i] = int32(text[(o+i+1)%len(text)])
			}
		}
		s.ZeroGrad()
		if loss, err = s.ForwardLoss(0, B, T, tok, nil, tgt); err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = loss
		}
		s.Backward(0, nil, 1)
		ScaleGrads(s.Params(), ClipScale(s.GradSumSquares(), 1))
		opt.Step(1e-2)
	}
	if math.Abs(float64(first)-math.Log(256)) > 0.2 {
		t.Errorf("initial loss %v, want ≈ ln 256 = 5.55", first)
	}
	if loss > 0.5 {
		t.Errorf("loss %v after 300 steps on a 45-byte cycle, want < 0.5 (started at %v)", loss, first)
	}
}

// Vocabularies past 256 (a BPE tokenizer's 4k–8k) work in both families:
// at init the loss is ln V, and ids up to V−1 are taken, V refused.
func TestLargeVocab(t *testing.T) {
	const V = 8192
	gpt := Config{NLayer: 1, NHead: 2, NEmbd: 16, BlockSize: 8, VocabSize: V}
	llama := Config{Family: FamilyLlama, NLayer: 1, NHead: 2, NKVHead: 1, NEmbd: 16, BlockSize: 8, VocabSize: V,
		IntermediateSize: 40, RopeTheta: 10000, RMSNormEps: 1e-5}
	for _, cfg := range []Config{gpt, llama} {
		s, err := NewStage(cfg, 0, 1, true, true, 2, 1)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(3, 3))
		tok, tgt := randTokens(r, 16, V), randTokens(r, 16, V)
		tok[0], tgt[1] = V-1, V-1
		loss, err := s.ForwardLoss(0, 2, 8, tok, nil, tgt)
		if err != nil {
			t.Fatalf("%v: %v", cfg.Family, err)
		}
		if math.Abs(float64(loss)-math.Log(V)) > 0.05 {
			t.Errorf("%v: initial loss %v, want ≈ ln %d = %.3f", cfg.Family, loss, V, math.Log(V))
		}
		if _, err := s.Backward(0, nil, 1); err != nil {
			t.Fatal(err)
		}
		if row := s.TiedWeight().Grad[(V-1)*16 : V*16]; maxAbs(row) == 0 {
			t.Errorf("%v: token %d's embedding row got no gradient", cfg.Family, V-1)
		}
		tok[0] = V
		if _, err := s.ForwardLoss(0, 2, 8, tok, nil, tgt); !errors.Is(err, ErrBadTokens) {
			t.Errorf("%v: token %d accepted: %v", cfg.Family, V, err)
		}
	}
}
