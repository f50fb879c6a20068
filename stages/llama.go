package stages

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
)

// The Llama family (Config.Family = FamilyLlama) is Hugging Face's
// LlamaForCausalLM (transformers/models/llama/modeling_llama.py) on the
// same Stage machinery as the GPT: a block is
//
//	x = x + o_proj(attn(rope(q_proj(h)), rope(k_proj(h)), v_proj(h)))   h = input_layernorm(x)
//	x = x + down_proj(silu(gate_proj(h)) · up_proj(h))                  h = post_attention_layernorm(x)
//
// with RMSNorm, rotary position embeddings in the rotate_half convention,
// grouped-query attention and no biases; the first stage looks up
// model.embed_tokens (no position table), the last applies model.norm and
// lm_head (the embedding itself unless UntiedEmbeddings). Tensor names and
// shapes are Hugging Face's state_dict ones, so a checkpoint loads into
// LlamaForCausalLM.
//
// q_proj, k_proj and v_proj are adjacent in the parameter array, and so
// are gate_proj and up_proj: each group is one matrix to Sgemm, so a block
// runs four matrix products forward instead of seven.

// Hugging Face tensor names shared by several files.
const (
	llamaEmbedName = "model.embed_tokens.weight"
	llamaNormName  = "model.norm.weight"
)

// llamaBlockParams are one decoder layer's parameters, Hugging Face's
// names in comments (Linear weights are (out, in)); QKV = (NH + 2·KVH)·hs.
type llamaBlockParams struct {
	q, k, v, o     *Param    // (NH·hs, C), (KVH·hs, C), (KVH·hs, C), (C, NH·hs)  self_attn.{q,k,v,o}_proj.weight
	gate, up, down *Param    // (I, C), (I, C), (C, I)  mlp.{gate,up,down}_proj.weight
	ln1, ln2       *Param    // (C) input_layernorm.weight, post_attention_layernorm.weight
	qkvw, dqkvw    []float32 // (QKV, C) q, k, v weights (and gradients) as one matrix
	guw, dguw      []float32 // (2I, C)  gate and up weights (and gradients) as one matrix
}

// llamaActs are one decoder layer's saved activations for one slot, in the
// order the forward pass writes them. The residual stream entering the
// layer is the previous layer's res3 (or the slot's x0).
type llamaActs struct {
	ln1     []float32 // (B, T, C)     input_layernorm(x)
	ln1Rstd []float32 // (B, T)        its 1/rms, for the backward
	qkv     []float32 // (B, T, QKV)   q_proj, k_proj, v_proj of ln1; q and k rotated in place
	atty    []float32 // (B, T, C)     attention output, heads side by side, before o_proj
	att     []float32 // (B, NH, T, T) softmax of the causal attention scores
	res2    []float32 // (B, T, C)     x + o_proj(atty)
	ln2     []float32 // (B, T, C)     post_attention_layernorm(res2)
	ln2Rstd []float32 // (B, T)
	gu      []float32 // (B, T, 2I)    gate_proj(ln2) then up_proj(ln2), per row
	act     []float32 // (B, T, I)     silu(gate)·up
	res3    []float32 // (B, T, C)     res2 + down_proj(act): the layer's output
}

// llamaQKV is the width of the fused q, k, v projection.
func llamaQKV(cfg Config) int { return (cfg.NHead + 2*cfg.NKVHead) * cfg.HeadSize() }

// llamaParamLayout lists the tensors of layers [lo, hi) (+ embed_tokens if
// first, + norm and lm_head if last) in Hugging Face state_dict order. A
// tied whole model has no separate lm_head.weight: it is embed_tokens.
// Decay is on the projection matrices and an untied lm_head, not on the
// embedding or the RMSNorm weights (as for the GPT).
func llamaParamLayout(cfg Config, lo, hi int, first, last bool) []paramSpec {
	C, V, I, hs := cfg.NEmbd, cfg.VocabSize, cfg.IntermediateSize, cfg.HeadSize()
	var specs []paramSpec
	add := func(name string, decay bool, shape ...int) {
		specs = append(specs, paramSpec{name, shape, decay})
	}
	if first {
		add(llamaEmbedName, false, V, C)
	}
	for l := lo; l < hi; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"self_attn.q_proj.weight", true, cfg.NHead*hs, C)
		add(p+"self_attn.k_proj.weight", true, cfg.NKVHead*hs, C)
		add(p+"self_attn.v_proj.weight", true, cfg.NKVHead*hs, C)
		add(p+"self_attn.o_proj.weight", true, C, cfg.NHead*hs)
		add(p+"mlp.gate_proj.weight", true, I, C)
		add(p+"mlp.up_proj.weight", true, I, C)
		add(p+"mlp.down_proj.weight", true, C, I)
		add(p+"input_layernorm.weight", false, C)
		add(p+"post_attention_layernorm.weight", false, C)
	}
	if last {
		add(llamaNormName, false, C)
		if !first || cfg.UntiedEmbeddings {
			add(lmHeadName, cfg.UntiedEmbeddings, V, C)
		}
	}
	return specs
}

// bindLlama points the stage's named parameters and fused views at the
// tensors allocParams laid out.
func (s *Stage) bindLlama(byName map[string]*Param) {
	offs := make(map[string]int, len(s.params))
	off := 0
	for _, p := range s.params {
		offs[p.Name] = off
		off += p.Size()
	}
	C, I := s.cfg.NEmbd, s.cfg.IntermediateSize
	QKV := llamaQKV(s.cfg)
	s.wte, s.lnfw, s.lmHead = byName[llamaEmbedName], byName[llamaNormName], byName[lmHeadName]
	if s.first && s.last && s.cfg.Tied() {
		s.lmHead = s.wte // tied: literally the same buffer
	}
	s.lblocks = make([]llamaBlockParams, s.hi-s.lo)
	for l := s.lo; l < s.hi; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		qo, go_ := offs[p+"self_attn.q_proj.weight"], offs[p+"mlp.gate_proj.weight"]
		s.lblocks[l-s.lo] = llamaBlockParams{
			q: byName[p+"self_attn.q_proj.weight"], k: byName[p+"self_attn.k_proj.weight"],
			v: byName[p+"self_attn.v_proj.weight"], o: byName[p+"self_attn.o_proj.weight"],
			gate: byName[p+"mlp.gate_proj.weight"], up: byName[p+"mlp.up_proj.weight"], down: byName[p+"mlp.down_proj.weight"],
			ln1: byName[p+"input_layernorm.weight"], ln2: byName[p+"post_attention_layernorm.weight"],
			// Adjacent by llamaParamLayout's order: q, k, v, then gate, up.
			qkvw: s.paramData[qo : qo+QKV*C : qo+QKV*C], dqkvw: s.gradData[qo : qo+QKV*C : qo+QKV*C],
			guw: s.paramData[go_ : go_+2*I*C : go_+2*I*C], dguw: s.gradData[go_ : go_+2*I*C : go_+2*I*C],
		}
	}
}

// llamaInitTensor fills data as Hugging Face's LlamaPreTrainedModel
// initializes the tensor called name: normal(0, 0.02) for every Linear
// and the embedding (initializer_range, no depth scaling), ones for the
// RMSNorm weights. As initTensor, the stream depends only on (seed, name);
// a tied lm_head copy takes the embedding's values.
func llamaInitTensor(data []float32, name string, seed uint64, tied bool) {
	if strings.HasSuffix(name, "layernorm.weight") || name == llamaNormName {
		for i := range data {
			data[i] = 1
		}
		return
	}
	key := name
	if name == lmHeadName && tied {
		key = llamaEmbedName
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	r := rand.New(rand.NewPCG(seed, h.Sum64()))
	for i := range data {
		data[i] = float32(r.NormFloat64() * 0.02)
	}
}

func (s *Stage) allocLlamaActs(nslots int) {
	C, NH, V, I := s.cfg.NEmbd, s.cfg.NHead, s.cfg.VocabSize, s.cfg.IntermediateSize
	T := s.cfg.BlockSize
	N := s.maxB * T
	TT := T * T
	QKV := llamaQKV(s.cfg)
	nb := s.hi - s.lo
	// The same count EstimateMemory makes (exact in float64 for any stage
	// NewStage accepts); take cuts it into the views below.
	perSlot := int(llamaBufSizes(s.cfg, float64(nb), s.last, float64(s.maxB), float64(poolSize()))[0])
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
		sl.lblocks = make([]llamaActs, nb)
		for l := range sl.lblocks {
			// Cut in the order of llamaActs' fields; N = B·T.
			a := &sl.lblocks[l]
			a.ln1 = take(N * C)
			a.ln1Rstd = take(N)
			a.qkv = take(N * QKV)
			a.atty = take(N * C)
			a.att = take(s.maxB * NH * TT)
			a.res2 = take(N * C)
			a.ln2 = take(N * C)
			a.ln2Rstd = take(N)
			a.gu = take(2 * N * I)
			a.act = take(N * I)
			a.res3 = take(N * C)
		}
		if s.last {
			sl.targets = make([]int32, N)
			sl.lnf = take(N * C)
			sl.lnfRstd = take(N)
			sl.probs = take(N * V)
			sl.losses = take(N)
		}
	}
	s.dres = make([]float32, N*C)
	s.dln = make([]float32, N*C)
	if nb > 0 {
		hs := s.cfg.HeadSize()
		s.datty = make([]float32, N*C)
		s.dqkv = make([]float32, N*QKV)
		s.dact = make([]float32, N*I)
		s.dgu = make([]float32, 2*N*I)
		s.attScratch = make([]float32, poolSize()*2*TT)
		s.ropeCos = make([]float32, T*hs/2)
		s.ropeSin = make([]float32, T*hs/2)
		ropeTables(s.ropeCos, s.ropeSin, T, hs, s.cfg.RopeTheta)
	}
}

// llamaForwardBlocks runs the embedding (first stage) and the decoder
// layers and returns the output residual stream.
func (s *Stage) llamaForwardBlocks(sl *slot, B, T int, tokens []int32, in []float32) []float32 {
	C, NH, KVH, I, hs := s.cfg.NEmbd, s.cfg.NHead, s.cfg.NKVHead, s.cfg.IntermediateSize, s.cfg.HeadSize()
	eps := s.cfg.RMSNormEps
	QKV := llamaQKV(s.cfg)
	N := B * T
	sl.B, sl.T, sl.state = B, T, slotEmpty
	x := sl.x0[:N*C]
	if s.first {
		copy(sl.tokens, tokens)
		tokenEmbedForward(x, tokens, s.wte.Data, N, C)
	} else {
		copy(x, in)
	}
	for l := range s.lblocks {
		p, a := &s.lblocks[l], &sl.lblocks[l]
		ln1, qkv, atty, res2 := a.ln1[:N*C], a.qkv[:N*QKV], a.atty[:N*C], a.res2[:N*C]
		ln2, gu, act, res3 := a.ln2[:N*C], a.gu[:2*N*I], a.act[:N*I], a.res3[:N*C]
		// x = x + self_attn(input_layernorm(x))
		rmsnormForward(&s.x, ln1, a.ln1Rstd, x, p.ln1.Data, N, C, eps)
		matmulForward(qkv, ln1, p.qkvw, nil, nil, N, C, QKV)
		ropeForward(&s.x, qkv, s.ropeCos, s.ropeSin, N, T, NH+KVH, hs, QKV)
		attentionForwardGQA(&s.x, atty, a.att, qkv, B, T, NH, KVH, hs)
		matmulForward(res2, atty, p.o.Data, nil, x, N, C, C)
		// x = x + mlp(post_attention_layernorm(x))
		rmsnormForward(&s.x, ln2, a.ln2Rstd, res2, p.ln2.Data, N, C, eps)
		matmulForward(gu, ln2, p.guw, nil, nil, N, C, 2*I)
		swigluForward(&s.x, act, gu, N, I)
		matmulForward(res3, act, p.down.Data, nil, res2, N, I, C)
		x = res3
	}
	return x
}

// llamaBackward is Backward for a Llama stage, from the point where the
// slot has been checked.
func (s *Stage) llamaBackward(sl *slot, dout []float32, lossScale float32) ([]float32, error) {
	B, T, C, V := sl.B, sl.T, s.cfg.NEmbd, s.cfg.VocabSize
	NH, KVH, I, hs := s.cfg.NHead, s.cfg.NKVHead, s.cfg.IntermediateSize, s.cfg.HeadSize()
	QKV := llamaQKV(s.cfg)
	N := B * T
	dres := s.dres[:N*C]
	if s.last {
		probs, lnf := sl.probs[:N*V], sl.lnf[:N*C]
		crossEntropyBackward(&s.x, probs, sl.targets, lossScale, N, V)
		dlnf := s.dln[:N*C]
		matmulBackward(dlnf, s.lmHead.Grad, nil, probs, lnf, s.lmHead.Data, N, C, V, false)
		clear(dres)
		rmsnormBackward(&s.x, dres, s.lnfw.Grad, dlnf, s.blockOut(sl, N), s.lnfw.Data, sl.lnfRstd, N, C)
	} else {
		if len(dout) != N*C {
			return nil, fmt.Errorf("backward: dout needs B·T·C = %d floats, got %d: %w", N*C, len(dout), ErrBadLength)
		}
		copy(dres, dout)
	}
	sl.state = slotEmpty
	for l := len(s.lblocks) - 1; l >= 0; l-- {
		p, a := &s.lblocks[l], &sl.lblocks[l]
		inp := sl.x0[:N*C]
		if l > 0 {
			inp = sl.lblocks[l-1].res3[:N*C]
		}
		dln, datty, dqkv := s.dln[:N*C], s.datty[:N*C], s.dqkv[:N*QKV]
		dact, dgu := s.dact[:N*I], s.dgu[:2*N*I]
		// dres holds dL/d(res3); the residual passes it straight to res2.
		matmulBackward(dact, p.down.Grad, nil, dres, a.act[:N*I], p.down.Data, N, I, C, false)
		swigluBackward(&s.x, dgu, dact, a.gu[:2*N*I], N, I)
		matmulBackward(dln, p.dguw, nil, dgu, a.ln2[:N*C], p.guw, N, C, 2*I, false)
		rmsnormBackward(&s.x, dres, p.ln2.Grad, dln, a.res2[:N*C], p.ln2.Data, a.ln2Rstd, N, C)
		// dres now holds dL/d(res2); it passes straight to the layer input.
		matmulBackward(datty, p.o.Grad, nil, dres, a.atty[:N*C], p.o.Data, N, C, C, false)
		attentionBackwardGQA(&s.x, dqkv, datty, a.qkv[:N*QKV], a.att, s.attScratch, B, T, NH, KVH, hs)
		ropeBackward(&s.x, dqkv, s.ropeCos, s.ropeSin, N, T, NH+KVH, hs, QKV)
		matmulBackward(dln, p.dqkvw, nil, dqkv, a.ln1[:N*C], p.qkvw, N, C, QKV, false)
		rmsnormBackward(&s.x, dres, p.ln1.Grad, dln, inp, p.ln1.Data, a.ln1Rstd, N, C)
	}
	if s.first {
		tokenEmbedBackward(s.wte.Grad, dres, sl.tokens[:N], N, C)
		return nil, nil
	}
	return dres, nil
}
