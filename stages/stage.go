package stages

import (
	"errors"
	"fmt"
)

// Tensor names shared by several files.
const (
	wteName    = "transformer.wte.weight"
	wpeName    = "transformer.wpe.weight"
	lmHeadName = "lm_head.weight"
)

// Param is one named parameter tensor, a view into the Stage's single
// parameter array (Data) and single gradient array (Grad). Names and shapes
// are nanoGPT's state_dict ones, Hugging Face LlamaForCausalLM's for a
// Llama (a Linear weight is (out, in)).
type Param struct {
	Name  string
	Shape []int
	Data  []float32
	Grad  []float32
	// Decay says AdamW applies weight decay: true for 2-D weight matrices,
	// false for biases, LayerNorm parameters and the embeddings.
	Decay bool
}

// Size is the number of elements.
func (p *Param) Size() int { return len(p.Data) }

// Stage is a contiguous range of transformer blocks [Lo, Hi) of one model
// (a GPT, or a Llama: see llama.go), plus the token (and, for the GPT,
// position) embeddings when it is the first stage and the final norm, LM
// head and cross-entropy loss when it is the last. The whole model is a
// Stage that is both first and last.
//
// A Stage holds `slots` independent activation sets so a pipeline schedule
// can keep several micro-batches in flight: Forward into a slot, later
// Backward from the same slot. All memory is allocated by NewStage; Forward,
// Backward and the optimizer allocate nothing.
//
// A Stage is not safe for concurrent use: one goroutine drives it (it uses
// the package's worker pool internally).
type Stage struct {
	cfg         Config
	lo, hi      int
	first, last bool
	maxB        int

	params              []*Param
	paramData, gradData []float32
	wte, wpe, lmHead    *Param
	lnfw, lnfb          *Param
	blocks              []blockParams

	slots []slot

	// Backward scratch, shared by all slots since backward passes run one
	// at a time. dres carries dL/d(residual stream) down through the blocks.
	dres       []float32 // (B, T, C)
	dln        []float32 // (B, T, C)  gradient at a LayerNorm's output
	datty      []float32 // (B, T, C)  gradient at the attention output
	dqkv       []float32 // (B, T, 3C)
	dfch       []float32 // (B, T, 4C) gradient before GELU
	dfchg      []float32 // (B, T, 4C) gradient after GELU
	attScratch []float32 // (workers, 2, T, T) per-worker attention backward scratch

	// Llama only (llama.go): the decoder layers, the rotary tables and the
	// SwiGLU backward scratch. dqkv is then (B, T, QKV).
	lblocks          []llamaBlockParams
	ropeCos, ropeSin []float32 // (block_size, hs/2)
	dact             []float32 // (B, T, I) gradient at the SwiGLU output
	dgu              []float32 // (B, T, 2I) gradient at gate_proj, up_proj

	x exec
}

// blockParams are one block's parameters, nanoGPT's names in comments
// (Linear weights are (out, in)); biases are nil without cfg.Bias.
type blockParams struct {
	ln1w    *Param // (C)     ln_1.weight
	ln1b    *Param // (C)     ln_1.bias
	qkvw    *Param // (3C, C) attn.c_attn.weight
	qkvb    *Param // (3C)    attn.c_attn.bias
	projw   *Param // (C, C)  attn.c_proj.weight
	projb   *Param // (C)     attn.c_proj.bias
	ln2w    *Param // (C)     ln_2.weight
	ln2b    *Param // (C)     ln_2.bias
	fcw     *Param // (4C, C) mlp.c_fc.weight
	fcb     *Param // (4C)    mlp.c_fc.bias
	fcprojw *Param // (C, 4C) mlp.c_proj.weight
	fcprojb *Param // (C)     mlp.c_proj.bias
}

// blockActs are one block's saved activations for one slot, in the order
// the forward pass writes them. B is the micro-batch, T the sequence
// length, C the width, NH the heads; the residual stream entering the block
// is the previous block's res3 (or the slot's x0).
type blockActs struct {
	ln1     []float32 // (B, T, C)  ln_1(x)
	ln1Mean []float32 // (B, T)     ln_1's mean, for its backward
	ln1Rstd []float32 // (B, T)     ln_1's 1/std
	qkv     []float32 // (B, T, 3C) c_attn(ln1): queries, keys, values
	atty    []float32 // (B, T, C)  attention output, heads side by side, before c_proj
	att     []float32 // (B, NH, T, T) softmax of the causal attention scores
	res2    []float32 // (B, T, C)  x + c_proj(atty): the residual after attention
	ln2     []float32 // (B, T, C)  ln_2(res2)
	ln2Mean []float32 // (B, T)
	ln2Rstd []float32 // (B, T)
	fch     []float32 // (B, T, 4C) c_fc(ln2), before GELU
	fchGelu []float32 // (B, T, 4C) GELU(fch)
	res3    []float32 // (B, T, C)  res2 + mlp c_proj(fchGelu): the block's output
}

type slotState int

const (
	slotEmpty     slotState = iota // nothing to go backward from
	slotForwarded                  // Forward or ForwardLoss ran; Backward may run
)

type slot struct {
	B, T    int // the shape of the micro-batch in this slot
	state   slotState
	x0      []float32   // (B, T, C) the stage's input residual stream
	tokens  []int32     // (B, T)    first stage: for the embedding backward
	targets []int32     // (B, T)    last stage
	blocks  []blockActs // one per block of the stage (GPT-2)
	lblocks []llamaActs // one per block of the stage (Llama)
	lnf     []float32   // (B, T, C) last stage: ln_f(residual)
	lnfMean []float32   // (B, T)    (GPT-2 only)
	lnfRstd []float32   // (B, T)
	probs   []float32   // (B, T, V) softmax of the logits
	losses  []float32   // (B, T)    cross-entropy per position
}

// Errors callers may test for.
var (
	ErrNotLast    = errors.New("stage is not the last stage: it has no LM head or loss; call Forward")
	ErrLast       = errors.New("stage is the last stage: call ForwardLoss (or ForwardLogits) instead of Forward")
	ErrSlotEmpty  = errors.New("slot has no forward pass to go backward from: call Forward/ForwardLoss on it first")
	ErrNotWhole   = errors.New("stage is not a whole model (first and last): sampling needs the embeddings and the LM head")
	ErrBadShape   = errors.New("bad batch shape")
	ErrBadTokens  = errors.New("token id out of range")
	ErrBadSlot    = errors.New("slot out of range")
	ErrBadLength  = errors.New("buffer has the wrong length")
	ErrBadStaging = errors.New("bad stage range")
)

// NewStage allocates a stage holding blocks [lo, hi) of the model cfg, for
// micro-batches of up to maxB sequences of up to cfg.BlockSize tokens, with
// `slots` activation sets. A first stage must start at block 0 and a last
// stage end at cfg.NLayer. Weights are initialized with DefaultSeed.
func NewStage(cfg Config, lo, hi int, first, last bool, maxB, slots int) (*Stage, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new stage: %w", err)
	}
	switch {
	case lo < 0 || hi > cfg.NLayer || lo > hi:
		return nil, fmt.Errorf("new stage: blocks [%d, %d) are not inside [0, %d): %w", lo, hi, cfg.NLayer, ErrBadStaging)
	case first && lo != 0:
		return nil, fmt.Errorf("new stage: a first stage must start at block 0, not %d: %w", lo, ErrBadStaging)
	case last && hi != cfg.NLayer:
		return nil, fmt.Errorf("new stage: a last stage must end at block n_layer = %d, not %d: %w", cfg.NLayer, hi, ErrBadStaging)
	case maxB < 1 || maxB > maxDim:
		return nil, fmt.Errorf("new stage: max batch %d must be in 1..%d: %w", maxB, maxDim, ErrBadShape)
	case slots < 1 || slots > 1024:
		return nil, fmt.Errorf("new stage: slots = %d must be in 1..1024", slots)
	}
	if b := MemoryBytes(cfg, lo, hi, first, last, maxB, slots); b > maxStageBytes {
		return nil, fmt.Errorf("new stage: blocks [%d, %d) with max batch %d and %d slots need %.1f GB: lower the batch, block_size or slots: %w",
			lo, hi, maxB, slots, b/1e9, ErrBadShape)
	}
	s := &Stage{cfg: cfg, lo: lo, hi: hi, first: first, last: last, maxB: maxB}
	s.allocParams()
	s.allocActs(slots)
	s.Init(DefaultSeed)
	return s, nil
}

// paramSpec is one parameter tensor of a stage: name, shape, decay flag.
type paramSpec struct {
	name  string
	shape []int
	decay bool
}

// paramLayout lists the tensors of blocks [lo, hi) (+ embeddings if first,
// + ln_f and LM head if last) in nanoGPT state_dict order. A last stage
// that is also first has no separate lm_head.weight: it is wte.
func paramLayout(cfg Config, lo, hi int, first, last bool) []paramSpec {
	if cfg.Family == FamilyLlama {
		return llamaParamLayout(cfg, lo, hi, first, last)
	}
	C, V := cfg.NEmbd, cfg.VocabSize
	var specs []paramSpec
	add := func(name string, decay bool, shape ...int) {
		specs = append(specs, paramSpec{name, shape, decay})
	}
	addB := func(name string, shape ...int) {
		if cfg.Bias {
			add(name, false, shape...)
		}
	}
	if first {
		add(wteName, false, V, C)
		add(wpeName, false, cfg.BlockSize, C)
	}
	for l := lo; l < hi; l++ {
		p := fmt.Sprintf("transformer.h.%d.", l)
		add(p+"ln_1.weight", false, C)
		addB(p+"ln_1.bias", C)
		add(p+"attn.c_attn.weight", true, 3*C, C)
		addB(p+"attn.c_attn.bias", 3*C)
		add(p+"attn.c_proj.weight", true, C, C)
		addB(p+"attn.c_proj.bias", C)
		add(p+"ln_2.weight", false, C)
		addB(p+"ln_2.bias", C)
		add(p+"mlp.c_fc.weight", true, 4*C, C)
		addB(p+"mlp.c_fc.bias", 4*C)
		add(p+"mlp.c_proj.weight", true, C, 4*C)
		addB(p+"mlp.c_proj.bias", C)
	}
	if last {
		add("transformer.ln_f.weight", false, C)
		addB("transformer.ln_f.bias", C)
		if !first {
			add(lmHeadName, false, V, C)
		}
	}
	return specs
}

func (s *Stage) allocParams() {
	specs := paramLayout(s.cfg, s.lo, s.hi, s.first, s.last)
	total := 0
	for _, sp := range specs {
		total += prod(sp.shape)
	}
	s.paramData = make([]float32, total)
	s.gradData = make([]float32, total)
	byName := make(map[string]*Param, len(specs))
	off := 0
	for _, sp := range specs {
		n := prod(sp.shape)
		p := &Param{Name: sp.name, Shape: sp.shape, Decay: sp.decay,
			Data: s.paramData[off : off+n : off+n], Grad: s.gradData[off : off+n : off+n]}
		off += n
		byName[sp.name] = p
		s.params = append(s.params, p)
	}
	if s.cfg.Family == FamilyLlama {
		s.bindLlama(byName)
		return
	}
	s.wte, s.wpe = byName[wteName], byName[wpeName]
	s.lnfw, s.lnfb = byName["transformer.ln_f.weight"], byName["transformer.ln_f.bias"]
	s.lmHead = byName[lmHeadName]
	if s.first && s.last {
		s.lmHead = s.wte // tied: literally the same buffer
	}
	s.blocks = make([]blockParams, s.hi-s.lo)
	for l := s.lo; l < s.hi; l++ {
		p := fmt.Sprintf("transformer.h.%d.", l)
		s.blocks[l-s.lo] = blockParams{
			ln1w: byName[p+"ln_1.weight"], ln1b: byName[p+"ln_1.bias"],
			qkvw: byName[p+"attn.c_attn.weight"], qkvb: byName[p+"attn.c_attn.bias"],
			projw: byName[p+"attn.c_proj.weight"], projb: byName[p+"attn.c_proj.bias"],
			ln2w: byName[p+"ln_2.weight"], ln2b: byName[p+"ln_2.bias"],
			fcw: byName[p+"mlp.c_fc.weight"], fcb: byName[p+"mlp.c_fc.bias"],
			fcprojw: byName[p+"mlp.c_proj.weight"], fcprojb: byName[p+"mlp.c_proj.bias"],
		}
	}
}

func prod(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// maxStageBytes refuses stages that could never be allocated (and whose
// sizes might overflow int), instead of crashing in make.
const maxStageBytes = 1 << 40

func (s *Stage) allocActs(nslots int) {
	if s.cfg.Family == FamilyLlama {
		s.allocLlamaActs(nslots)
		return
	}
	C, NH, V := s.cfg.NEmbd, s.cfg.NHead, s.cfg.VocabSize
	N := s.maxB * s.cfg.BlockSize
	TT := s.cfg.BlockSize * s.cfg.BlockSize
	nb := s.hi - s.lo
	perBlock := 16*N*C + 4*N + s.maxB*NH*TT
	perSlot := N*C + nb*perBlock
	if s.last {
		perSlot += N*C + 2*N + N*V + N
	}
	// One backing array per slot, cut into named views.
	s.slots = make([]slot, nslots)
	for i := range s.slots {
		buf := make([]float32, perSlot)
		take := func(n int) []float32 {
			v := buf[:n:n]
			buf = buf[n:]
			return v
		}
		sl := &s.slots[i]
		sl.x0 = take(N * C)
		if s.first {
			sl.tokens = make([]int32, N)
		}
		sl.blocks = make([]blockActs, nb)
		for l := range sl.blocks {
			// Cut in the order of blockActs' fields (one line each, as
			// llm.c lays out its activation tensors); N = B·T.
			a := &sl.blocks[l]
			a.ln1 = take(N * C)
			a.ln1Mean = take(N)
			a.ln1Rstd = take(N)
			a.qkv = take(3 * N * C)
			a.atty = take(N * C)
			a.att = take(s.maxB * NH * TT)
			a.res2 = take(N * C)
			a.ln2 = take(N * C)
			a.ln2Mean = take(N)
			a.ln2Rstd = take(N)
			a.fch = take(4 * N * C)
			a.fchGelu = take(4 * N * C)
			a.res3 = take(N * C)
		}
		if s.last {
			sl.targets = make([]int32, N)
			sl.lnf = take(N * C)
			sl.lnfMean = take(N)
			sl.lnfRstd = take(N)
			sl.probs = take(N * V)
			sl.losses = take(N)
		}
	}
	s.dres = make([]float32, N*C)
	s.dln = make([]float32, N*C)
	if nb > 0 {
		s.datty = make([]float32, N*C)
		s.dqkv = make([]float32, 3*N*C)
		s.dfch = make([]float32, 4*N*C)
		s.dfchg = make([]float32, 4*N*C)
		s.attScratch = make([]float32, poolSize()*2*TT)
	}
}

// Init sets every parameter to nanoGPT's initialization (Hugging Face's
// for a Llama) derived from (seed, tensor name) — see initTensor and
// llamaInitTensor — so every split of the model starts from identical
// weights. Gradients are zeroed.
func (s *Stage) Init(seed uint64) {
	for _, p := range s.params {
		if s.cfg.Family == FamilyLlama {
			llamaInitTensor(p.Data, p.Name, seed, s.cfg.Tied())
			continue
		}
		initTensor(p.Data, p.Name, seed, s.cfg.NLayer)
	}
	s.ZeroGrad()
}

// Config returns the model configuration.
func (s *Stage) Config() Config { return s.cfg }

// Range returns the block range [lo, hi) and whether the stage is first
// and/or last.
func (s *Stage) Range() (lo, hi int, first, last bool) { return s.lo, s.hi, s.first, s.last }

// Params lists the stage's parameters in state_dict order (nanoGPT's, or
// Hugging Face's for a Llama). The tied embedding appears once (as
// transformer.wte.weight / model.embed_tokens.weight on a first stage, as
// lm_head.weight on a last stage that is not first); an untied Llama head
// is lm_head.weight on the last stage.
func (s *Stage) Params() []*Param { return s.params }

// Param returns the parameter called name (nanoGPT naming), or nil.
func (s *Stage) Param(name string) *Param {
	for _, p := range s.params {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Slots is the number of activation sets (micro-batches in flight).
func (s *Stage) Slots() int { return len(s.slots) }

// MaxBatch is the largest B a forward pass accepts.
func (s *Stage) MaxBatch() int { return s.maxB }

// NumParams is the number of parameter values the stage holds.
func (s *Stage) NumParams() int { return len(s.paramData) }

// TiedWeight is the stage's copy of the tied token-embedding / LM-head
// matrix (V, C): transformer.wte.weight (model.embed_tokens.weight for a
// Llama) on a first stage, lm_head.weight on a last stage, nil on a middle
// stage and on every stage of a model with UntiedEmbeddings. When a model is split, the runtime
// must, every step, add the two copies' gradients together (both Grad slices
// then hold the sum) before the optimizer step, so the copies, initialized
// identically, stay identical. On a whole-model stage they are one buffer.
func (s *Stage) TiedWeight() *Param {
	if !s.cfg.Tied() {
		return nil
	}
	if s.first {
		return s.wte
	}
	return s.lmHead
}

// ZeroGrad sets all parameter gradients to zero. Backward adds into them,
// so gradients of several micro-batches accumulate until ZeroGrad.
func (s *Stage) ZeroGrad() { clear(s.gradData) }

func (s *Stage) checkBatch(slotIdx, B, T int, tokens []int32, in []float32) (*slot, error) {
	if slotIdx < 0 || slotIdx >= len(s.slots) {
		return nil, fmt.Errorf("slot %d not in 0..%d: %w", slotIdx, len(s.slots)-1, ErrBadSlot)
	}
	if B < 1 || B > s.maxB || T < 1 || T > s.cfg.BlockSize {
		return nil, fmt.Errorf("batch %d×%d: need 1 ≤ B ≤ %d (max batch) and 1 ≤ T ≤ %d (block_size): %w", B, T, s.maxB, s.cfg.BlockSize, ErrBadShape)
	}
	if s.first {
		if len(tokens) != B*T {
			return nil, fmt.Errorf("first stage needs B·T = %d tokens, got %d: %w", B*T, len(tokens), ErrBadLength)
		}
		for i, t := range tokens {
			if t < 0 || int(t) >= s.cfg.VocabSize {
				return nil, fmt.Errorf("token %d at position %d not in 0..%d: %w", t, i, s.cfg.VocabSize-1, ErrBadTokens)
			}
		}
	} else if len(in) != B*T*s.cfg.NEmbd {
		return nil, fmt.Errorf("stage input needs B·T·C = %d floats, got %d: %w", B*T*s.cfg.NEmbd, len(in), ErrBadLength)
	}
	return &s.slots[slotIdx], nil
}

// Forward runs a non-last stage on one micro-batch of B sequences of T
// tokens into activation slot `slot`: a first stage reads tokens (B·T ids),
// other stages read in (B·T·C residual stream, copied). It returns the
// residual stream after the stage's last block (B·T·C). The returned slice
// aliases the slot's memory: it stays valid until the next forward pass into
// the same slot.
func (s *Stage) Forward(slot, B, T int, tokens []int32, in []float32) ([]float32, error) {
	if s.last {
		return nil, ErrLast
	}
	sl, err := s.checkBatch(slot, B, T, tokens, in)
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	out := s.forwardBlocks(sl, B, T, tokens, in)
	sl.state = slotForwarded
	return out, nil
}

// forwardBlocks runs the embeddings (first stage) and the blocks and
// returns the output residual stream.
func (s *Stage) forwardBlocks(sl *slot, B, T int, tokens []int32, in []float32) []float32 {
	if s.cfg.Family == FamilyLlama {
		return s.llamaForwardBlocks(sl, B, T, tokens, in)
	}
	C, NH := s.cfg.NEmbd, s.cfg.NHead
	N := B * T
	sl.B, sl.T, sl.state = B, T, slotEmpty
	x := sl.x0[:N*C]
	if s.first {
		copy(sl.tokens, tokens)
		encoderForward(x, tokens, s.wte.Data, s.wpe.Data, B, T, C)
	} else {
		copy(x, in)
	}
	for l := range s.blocks {
		p, a := &s.blocks[l], &sl.blocks[l]
		ln1, qkv, atty := a.ln1[:N*C], a.qkv[:3*N*C], a.atty[:N*C]
		res2, ln2, fch, fchg, res3 := a.res2[:N*C], a.ln2[:N*C], a.fch[:4*N*C], a.fchGelu[:4*N*C], a.res3[:N*C]
		// x = x + attn(ln_1(x))
		layernormForward(&s.x, ln1, a.ln1Mean, a.ln1Rstd, x, p.ln1w.Data, data(p.ln1b), N, C)
		matmulForward(qkv, ln1, p.qkvw.Data, data(p.qkvb), nil, N, C, 3*C)
		attentionForward(&s.x, atty, a.att, qkv, B, T, C, NH)
		matmulForward(res2, atty, p.projw.Data, data(p.projb), x, N, C, C)
		// x = x + mlp(ln_2(x))
		layernormForward(&s.x, ln2, a.ln2Mean, a.ln2Rstd, res2, p.ln2w.Data, data(p.ln2b), N, C)
		matmulForward(fch, ln2, p.fcw.Data, data(p.fcb), nil, N, C, 4*C)
		geluForward(&s.x, fchg, fch, 4*N*C)
		matmulForward(res3, fchg, p.fcprojw.Data, data(p.fcprojb), res2, N, 4*C, C)
		x = res3
	}
	return x
}

// ForwardLogits runs a last stage up to the LM head and returns the logits
// (B·T·V), aliasing the slot's memory until its next forward pass. It does
// not prepare the slot for Backward.
func (s *Stage) ForwardLogits(slot, B, T int, tokens []int32, in []float32) ([]float32, error) {
	if !s.last {
		return nil, ErrNotLast
	}
	sl, err := s.checkBatch(slot, B, T, tokens, in)
	if err != nil {
		return nil, fmt.Errorf("forward logits: %w", err)
	}
	return s.forwardHead(sl, B, T, tokens, in), nil
}

func (s *Stage) forwardHead(sl *slot, B, T int, tokens []int32, in []float32) []float32 {
	C, V := s.cfg.NEmbd, s.cfg.VocabSize
	N := B * T
	x := s.forwardBlocks(sl, B, T, tokens, in)
	lnf, logits := sl.lnf[:N*C], sl.probs[:N*V]
	if s.cfg.Family == FamilyLlama {
		rmsnormForward(&s.x, lnf, sl.lnfRstd, x, s.lnfw.Data, N, C, s.cfg.RMSNormEps)
	} else {
		layernormForward(&s.x, lnf, sl.lnfMean, sl.lnfRstd, x, s.lnfw.Data, data(s.lnfb), N, C)
	}
	matmulForward(logits, lnf, s.lmHead.Data, nil, nil, N, C, V)
	return logits
}

// ForwardLoss runs a last stage on one micro-batch into slot `slot` and
// returns the mean cross-entropy loss in nats over the B·T targets
// (targets[i] is the token that should follow position i). tokens/in are
// read as in Forward.
func (s *Stage) ForwardLoss(slot, B, T int, tokens []int32, in []float32, targets []int32) (float32, error) {
	if !s.last {
		return 0, ErrNotLast
	}
	sl, err := s.checkBatch(slot, B, T, tokens, in)
	if err != nil {
		return 0, fmt.Errorf("forward loss: %w", err)
	}
	if len(targets) != B*T {
		return 0, fmt.Errorf("forward loss: need B·T = %d targets, got %d: %w", B*T, len(targets), ErrBadLength)
	}
	for i, t := range targets {
		if t < 0 || int(t) >= s.cfg.VocabSize {
			return 0, fmt.Errorf("forward loss: target %d at position %d not in 0..%d: %w", t, i, s.cfg.VocabSize-1, ErrBadTokens)
		}
	}
	N, V := B*T, s.cfg.VocabSize
	s.forwardHead(sl, B, T, tokens, in)
	copy(sl.targets, targets)
	crossEntropyForward(&s.x, sl.losses, sl.probs[:N*V], targets, N, V)
	// Sum in position order in float64: deterministic and accurate.
	var sum float64
	for _, l := range sl.losses[:N] {
		sum += float64(l)
	}
	sl.state = slotForwarded
	return float32(sum / float64(N)), nil
}

// Backward runs the backward pass of the micro-batch held in slot `slot`,
// adding parameter gradients into Grad (accumulation: call ZeroGrad once per
// optimizer step). A last stage ignores dout and starts from dL/dloss =
// lossScale (1/M to average M micro-batches); other stages read dout
// (B·T·C, dL/d(their output)). It returns dL/d(stage input) (B·T·C) for a
// non-first stage, aliasing a buffer that stays valid until the next
// Backward call, and nil for a first stage. The slot is consumed.
func (s *Stage) Backward(slotIdx int, dout []float32, lossScale float32) ([]float32, error) {
	if slotIdx < 0 || slotIdx >= len(s.slots) {
		return nil, fmt.Errorf("backward: slot %d not in 0..%d: %w", slotIdx, len(s.slots)-1, ErrBadSlot)
	}
	sl := &s.slots[slotIdx]
	if sl.state != slotForwarded {
		return nil, fmt.Errorf("backward: slot %d: %w", slotIdx, ErrSlotEmpty)
	}
	if s.cfg.Family == FamilyLlama {
		return s.llamaBackward(sl, dout, lossScale)
	}
	B, T, C, NH, V := sl.B, sl.T, s.cfg.NEmbd, s.cfg.NHead, s.cfg.VocabSize
	N := B * T
	dres := s.dres[:N*C]
	if s.last {
		probs, lnf := sl.probs[:N*V], sl.lnf[:N*C]
		crossEntropyBackward(&s.x, probs, sl.targets, lossScale, N, V)
		dlnf := s.dln[:N*C]
		matmulBackward(dlnf, s.lmHead.Grad, nil, probs, lnf, s.lmHead.Data, N, C, V, false)
		clear(dres)
		layernormBackward(&s.x, dres, s.lnfw.Grad, grad(s.lnfb), dlnf, s.blockOut(sl, N), s.lnfw.Data, sl.lnfMean, sl.lnfRstd, N, C)
	} else {
		if len(dout) != N*C {
			return nil, fmt.Errorf("backward: dout needs B·T·C = %d floats, got %d: %w", N*C, len(dout), ErrBadLength)
		}
		copy(dres, dout)
	}
	sl.state = slotEmpty
	for l := len(s.blocks) - 1; l >= 0; l-- {
		p, a := &s.blocks[l], &sl.blocks[l]
		inp := sl.x0[:N*C]
		if l > 0 {
			inp = sl.blocks[l-1].res3[:N*C]
		}
		dln, datty, dqkv := s.dln[:N*C], s.datty[:N*C], s.dqkv[:3*N*C]
		dfch, dfchg := s.dfch[:4*N*C], s.dfchg[:4*N*C]
		// dres holds dL/d(res3); the residual passes it straight to res2.
		matmulBackward(dfchg, p.fcprojw.Grad, grad(p.fcprojb), dres, a.fchGelu[:4*N*C], p.fcprojw.Data, N, 4*C, C, false)
		geluBackward(&s.x, dfch, a.fch[:4*N*C], a.fchGelu[:4*N*C], dfchg, 4*N*C)
		matmulBackward(dln, p.fcw.Grad, grad(p.fcb), dfch, a.ln2[:N*C], p.fcw.Data, N, C, 4*C, false)
		layernormBackward(&s.x, dres, p.ln2w.Grad, grad(p.ln2b), dln, a.res2[:N*C], p.ln2w.Data, a.ln2Mean, a.ln2Rstd, N, C)
		// dres now holds dL/d(res2); it passes straight to the block input.
		matmulBackward(datty, p.projw.Grad, grad(p.projb), dres, a.atty[:N*C], p.projw.Data, N, C, C, false)
		attentionBackward(&s.x, dqkv, datty, a.qkv[:3*N*C], a.att, s.attScratch, B, T, C, NH)
		matmulBackward(dln, p.qkvw.Grad, grad(p.qkvb), dqkv, a.ln1[:N*C], p.qkvw.Data, N, C, 3*C, false)
		layernormBackward(&s.x, dres, p.ln1w.Grad, grad(p.ln1b), dln, inp, p.ln1w.Data, a.ln1Mean, a.ln1Rstd, N, C)
	}
	if s.first {
		encoderBackward(s.wte.Grad, s.wpe.Grad, dres, sl.tokens[:N], B, T, C)
		return nil, nil
	}
	return dres, nil
}

// blockOut is the residual stream after the stage's last block.
func (s *Stage) blockOut(sl *slot, N int) []float32 {
	if n := len(sl.lblocks); n > 0 {
		return sl.lblocks[n-1].res3[:N*s.cfg.NEmbd]
	}
	if len(sl.blocks) == 0 {
		return sl.x0[:N*s.cfg.NEmbd]
	}
	return sl.blocks[len(sl.blocks)-1].res3[:N*s.cfg.NEmbd]
}

func data(p *Param) []float32 {
	if p == nil {
		return nil
	}
	return p.Data
}

func grad(p *Param) []float32 {
	if p == nil {
		return nil
	}
	return p.Grad
}
