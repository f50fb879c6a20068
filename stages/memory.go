package stages

// Memory is what one stage holds, in bytes, by kind. The figures are
// float64 so that an absurd config gives a large number instead of an
// overflow; for any stage that can exist they are exact integers.
type Memory struct {
	// Params is the weights (float32), Grads their gradients (the same).
	Params, Grads float64
	// AdamW is the optimizer's m and v: NewAdamW over the stage's Params.
	AdamW float64
	// PerSlot is one activation slot: every activation the backward pass
	// needs for a micro-batch of maxB sequences of block_size tokens (the
	// attention probabilities are (maxB, n_head, T, T) per block), the
	// logits if last, and the token and target ids.
	PerSlot float64
	// Slots is the number of activation slots (micro-batches in flight).
	Slots int
	// Scratch is the backward scratch the slots share: gradients at a
	// block's inputs and inside it, the attention backward's per-worker
	// T×T buffers (one per worker of this process), a Llama's rotary
	// tables.
	Scratch float64
}

// Stage is what NewStage allocates: everything but the optimizer state.
func (m Memory) Stage() float64 {
	return m.Params + m.Grads + float64(m.Slots)*m.PerSlot + m.Scratch
}

// Total is a training stage's memory: Stage plus the AdamW moments.
func (m Memory) Total() float64 { return m.Stage() + m.AdamW }

// EstimateMemory is what a stage of blocks [lo, hi) of cfg, for
// micro-batches of up to maxB sequences with `slots` activation sets,
// holds, by kind, for either family. It counts exactly the buffers NewStage
// and NewAdamW allocate (TestMemoryEstimateIsExact sums them), not Go's
// per-object overhead (a few hundred bytes per tensor) or the sgemm
// kernel's packing buffers (a few hundred KiB per worker, shared by all
// stages of the process).
func EstimateMemory(cfg Config, lo, hi int, first, last bool, maxB, slots int) Memory {
	var params float64
	for _, sp := range paramLayout(cfg, lo, hi, first, last) {
		n := 1.0
		for _, d := range sp.shape {
			n *= float64(d)
		}
		params += n
	}
	C, NH, V := float64(cfg.NEmbd), float64(cfg.NHead), float64(cfg.VocabSize)
	T, B, nb := float64(cfg.BlockSize), float64(maxB), float64(hi-lo)
	N := B * T
	W := float64(poolSize())
	var perSlot, scratch float64 // in float32s
	if cfg.Family == FamilyLlama {
		z := llamaBufSizes(cfg, nb, last, B, W)
		perSlot, scratch = z[0], z[1]
	} else {
		perSlot = N*C + nb*(16*N*C+4*N+B*NH*T*T)
		if last {
			perSlot += N*C + 2*N + N*V + N
		}
		scratch = 2 * N * C
		if hi > lo {
			scratch += N*C + 3*N*C + 4*N*C + 4*N*C + W*2*T*T
		}
	}
	// The int32 token ids (first stage) and targets (last stage).
	if first {
		perSlot += N
	}
	if last {
		perSlot += N
	}
	return Memory{Params: 4 * params, Grads: 4 * params, AdamW: 8 * params,
		PerSlot: 4 * perSlot, Slots: slots, Scratch: 4 * scratch}
}

// llamaBufSizes is the number of float32s in one activation slot and in
// the backward scratch of a Llama stage of nb layers: allocLlamaActs cuts
// exactly these. float64, so that sizes of absurd configs cannot overflow.
func llamaBufSizes(cfg Config, nb float64, last bool, B, W float64) [2]float64 {
	C, V, I := float64(cfg.NEmbd), float64(cfg.VocabSize), float64(cfg.IntermediateSize)
	T, NH := float64(cfg.BlockSize), float64(cfg.NHead)
	QKV := float64(cfg.NHead+2*cfg.NKVHead) * float64(cfg.HeadSize())
	N := B * T
	perLayer := 5*N*C + 2*N + N*QKV + B*NH*T*T + 3*N*I
	perSlot := N*C + nb*perLayer
	if last {
		perSlot += N*C + N + N*V + N
	}
	scratch := 2 * N * C
	if nb > 0 {
		scratch += N*C + N*QKV + N*I + 2*N*I + W*2*T*T + T*float64(cfg.HeadSize())
	}
	return [2]float64{perSlot, scratch}
}

// MemoryBytes is EstimateMemory(…).Stage(): what NewStage allocates for
// the stage (the optimizer adds EstimateMemory's AdamW, 2× the
// parameters).
func MemoryBytes(cfg Config, lo, hi int, first, last bool, maxB, slots int) float64 {
	return EstimateMemory(cfg, lo, hi, first, last, maxB, slots).Stage()
}
