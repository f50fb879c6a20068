package stages

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
)

// DefaultSeed is the initialization seed NewStage uses (nanoGPT's 1337);
// call Init to choose another.
const DefaultSeed = 1337

// initTensor fills data as nanoGPT initializes the tensor called name. The
// random stream is a PCG seeded by (seed, FNV-1a(name)), so a tensor's
// initial values depend only on the seed and its name, never on which stage
// holds it or in which order tensors are created: a model split into any
// number of stages starts from the same weights as the whole model.
func initTensor(data []float32, name string, seed uint64, nLayer int) {
	switch {
	case strings.HasSuffix(name, ".bias"):
		clear(data)
		return
	case strings.Contains(name, ".ln_") && strings.HasSuffix(name, ".weight"):
		for i := range data {
			data[i] = 1
		}
		return
	}
	key := name
	if name == lmHeadName {
		// The LM head is tied to the token embedding: same values.
		key = wteName
	}
	std := 0.02
	if strings.HasSuffix(name, ".c_proj.weight") {
		// GPT-2 scales the projections that write into the residual stream
		// so the stream's variance does not grow with depth.
		std = 0.02 / math.Sqrt(2*float64(nLayer))
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	r := rand.New(rand.NewPCG(seed, h.Sum64()))
	for i := range data {
		data[i] = float32(r.NormFloat64() * std)
	}
}
