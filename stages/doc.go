// Package stages is the model engine: nanoGPT's GPT (karpathy/nanoGPT
// model.py) and Hugging Face's Llama (transformers' modeling_llama.py),
// written llm.c style on flat []float32 buffers, cut into pipeline stages
// from the start. Config.Family picks the model; the zero value is GPT-2,
// which the rest of this comment describes first.
//
// A Stage holds the blocks [lo, hi) of one model, plus the token and
// position embeddings if it is the first stage and the final LayerNorm, the
// LM head (tied to the token embedding) and the cross-entropy loss if it is
// the last. The whole model is a Stage that is first and last. Data flows:
//
//	first:  tokens (B,T) ─► wte+wpe ─► blocks ─► residual (B,T,C) ─► next stage
//	middle: residual (B,T,C) ─► blocks ─► residual (B,T,C)
//	last:   residual (B,T,C) ─► blocks ─► ln_f ─► logits (B,T,V) ─► mean loss
//
// and Backward walks the same path in reverse, returning dL/d(input) for the
// previous stage and adding parameter gradients into each Param's Grad.
// Using it (one goroutine per Stage; returned slices alias stage memory):
//
//	s, err := stages.NewStage(cfg, lo, hi, first, last, maxB, slots)
//	opt, err := stages.NewAdamW(s.Params(), stages.DefaultAdamWConfig())
//	s.ZeroGrad()
//	for m := range microBatches {                     // any schedule; slot = m % slots
//		out, err := s.Forward(slot, B, T, tokens, in)   // non-last stages
//		loss, err := s.ForwardLoss(slot, B, T, tokens, in, targets) // last stage
//		din, err := s.Backward(slot, dout, 1/float32(M)) // later, same slot
//	}
//	// runtime: add the two TiedWeight() gradients of a split model,
//	// sum s.GradSumSquares() over stages, ScaleGrads by ClipScale(...)
//	opt.Step(lr)
//
// Checkpoints: SaveStage/LoadStage (weights + optional AdamW state, config
// in the metadata), MergeCheckpoints (stage files → one full-model file),
// WriteSafetensors/ReadSafetensors underneath. Sample/Generate draw tokens
// from a whole-model stage.
//
// Each layer is a forward/backward function pair (layernorm.go, matmul.go,
// attention.go, gelu.go, embedding.go, crossentropy.go); backward functions
// add into their gradient buffers. All matrix products go through
// kernels.Sgemm. Parameters live in one array and activations in one array
// per slot, allocated once by NewStage; training steps allocate nothing.
//
// Speed: matrix products are ~90% of a training step, so everything else
// is kept small. Causal attention runs per (batch, head) in 32-row blocks
// through Sgemm, skipping the masked upper triangle block by block.
// GELU, softmax (attention rows and cross-entropy), LayerNorm, bias adds
// and AdamW have AVX2 versions (vec_amd64.s, chosen once at start-up from
// the CPU's features; the tails of rows that are not a multiple of 8, and
// other CPUs, run the Go loops). Each keeps its portable reference beside
// it (geluForwardRef, softmaxRef, lnRowForwardRef, attentionForwardRef, …)
// and tests compare the two on awkward shapes. GELU and AdamW repeat the
// Go loops' operations in order and give the same bits; softmax and
// LayerNorm sum in 8 lanes and agree to float32 rounding.
// BenchmarkTrainStep measures the reference shape (tokens/s and tokens
// per CPU-second); experiments/vs-pytorch compares it with PyTorch.
//
// Work is spread over cores by a small process-wide worker pool
// (parallel.go) that hands out pieces of each loop dynamically; every
// parallel loop writes each output from a fixed sequence of operations, so
// results are bit-identical whatever the core count. A model cut into 2 or 3 stages gives bit-identical loss and
// gradients to the whole model, except the tied embedding when gradients of
// several micro-batches are accumulated (float additions in another order;
// agrees to 1e-6 of the tensor's largest gradient).
//
// The Llama family (llama.go; FamilyLlama) runs on the same Stage: a block
// is RMSNorm (rmsnorm.go), the fused q/k/v projection, rotary position
// embeddings in Hugging Face's rotate_half convention with rope_theta
// (rope.go), grouped-query causal attention (n_kv_head; attention.go's job,
// which runs the GPT's multi-head case with the same arguments as before),
// o_proj, RMSNorm, the fused gate/up projection, SwiGLU (swiglu.go, AVX2
// like GELU) and down_proj; no biases, no position table, the LM head
// tied to model.embed_tokens unless UntiedEmbeddings. Tensor names and
// shapes are LlamaForCausalLM's; HFConfigJSON writes the config.json that
// goes with them. EstimateMemory (memory.go) gives what a stage of either
// family allocates, by kind.
//
// Initialization (init.go) derives each tensor from (seed, tensor name), so
// every split starts from the same weights. Names and shapes are nanoGPT's
// state_dict ones, so checkpoints (safetensors.go) load into PyTorch.
//
// Correctness is checked by tests: every layer's backward against central
// differences in float32 (step 1e-2, |g − fd| ≤ 2e-3 + 1e-2·|fd|); the whole
// model's loss against an independent float64 forward pass (1e-5 relative)
// and every parameter tensor's gradient against float64 central differences
// of it (step 1e-6, |g − fd| ≤ 1e-4·max|g| + 1e-3·|fd|); split models
// against the whole one; and loss and gradients against PyTorch running
// nanoGPT's model code (testdata/torch_reference.py; 1e-5 relative loss,
// 1e-4·max|g| per tensor). The Llama has the same checks: every new
// backward against central differences, the whole model against a float64
// forward pass written from modeling_llama.py (llama_ref64_test.go),
// splits against the whole model, and loss and gradients against a plain
// PyTorch copy of modeling_llama.py's modules (grouped-query and tied,
// multi-head and untied), with the same tolerances.
package stages
