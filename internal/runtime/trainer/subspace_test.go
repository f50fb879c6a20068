package trainer

import (
	"context"
	"math"
	"testing"

	"github.com/narrowband/narrowband/compression"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
	"github.com/narrowband/narrowband/stages"
)

// TestSubspaceCodecIsExact: for the constrained model, sending k fp32
// coefficients per token (plus the ids) forward and Uᵀg backward trains
// exactly like sending the whole fp32 residual stream both ways.
func TestSubspaceCodecIsExact(t *testing.T) {
	gpt := tinyConfig(t)
	llama := gpt
	m := stages.DefaultLlamaConfig()
	m.NHead, m.NKVHead, m.NEmbd, m.BlockSize, m.IntermediateSize = gpt.Model.NHead, 1, gpt.Model.NEmbd, gpt.Model.BlockSize, 3*gpt.Model.NEmbd
	llama.Model = m
	untied := llama
	untied.Model.UntiedEmbeddings = true
	// A Llama's residual writers are embed_tokens, o_proj and down_proj:
	// if the constraint missed one, the boundary would not be E0[tok] + U·c
	// and the codec would not be exact.
	for _, tc := range []struct {
		name string
		c    config.Config
	}{{"gpt2", gpt}, {"llama", llama}, {"llama-untied", untied}} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.Run.Steps = 10
			c.Model.NLayer = 3
			c.Pipeline.Stages = 3
			c.Compression.Method = compression.MethodSubspace
			c.Compression.Rank = 8
			c.Compression.Precision = compression.FP32
			wireLoss, wireState := stateOf(t, c)
			pipeline.ConstrainOnly = true
			defer func() { pipeline.ConstrainOnly = false }()
			refLoss, refState := stateOf(t, c)
			for i := range refLoss {
				if d := math.Abs(wireLoss[i]-refLoss[i]) / refLoss[i]; d > 1e-5 {
					t.Errorf("loss value %d: subspace codec %v, fp32 links %v", i, wireLoss[i], refLoss[i])
				}
			}
			compareStates(t, refState, wireState, 1e-5)

			// And the constraint is real: the model differs from an unconstrained one.
			c.Compression.Method = compression.MethodNone
			pipeline.ConstrainOnly = false
			freeLoss, _ := stateOf(t, c)
			if math.Abs(freeLoss[len(freeLoss)-1]-refLoss[len(refLoss)-1]) < 1e-6 {
				t.Error("the constrained model trained exactly like the unconstrained one: the constraint does nothing")
			}
		})
	}
}

// TestSubspaceUntiedHead: with compression.untie_head the last stage
// trains its own LM head; the checkpoint carries it, and resuming from it
// continues bit-identically.
func TestSubspaceUntiedHead(t *testing.T) {
	c := tinyConfig(t)
	c.Model.NLayer = 2
	c.Pipeline.Stages = 2
	c.Compression.Method = compression.MethodSubspace
	c.Compression.Rank = 8
	c.Compression.Precision = compression.FP16
	c.Compression.UntieHead = true
	whole := t.TempDir()
	runTiny(t, c, whole)
	st, err := LoadState(whole + "/" + StateFile)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string][]float32{}
	for _, x := range st.Tensors {
		byName[x.Name] = x.Data
	}
	head, wte := byName["lm_head.weight"], byName["transformer.wte.weight"]
	if head == nil || wte == nil {
		t.Fatal("the state lacks lm_head.weight or transformer.wte.weight")
	}
	same := true
	for i := range head {
		same = same && head[i] == wte[i]
	}
	if same {
		t.Fatal("the untied head equals the embedding after training")
	}
	c.Train.CheckpointInterval = 3
	broken := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Run(ctx, Options{Config: c, Out: broken, Observer: &stopAfter{n: 4, cancel: cancel}})
	if _, err := Run(context.Background(), Options{Config: c, Out: broken, Resume: broken}); err != nil {
		t.Fatal(err)
	}
	lw, lr := losses(t, whole), losses(t, broken)
	for i := range lw {
		if lw[i] != lr[i] {
			t.Fatalf("value %d: resumed %v, uninterrupted %v", i, lr[i], lw[i])
		}
	}
}

// TestSubspaceLowBitTrains: int4 and int3 coefficients (packed codes, bf16
// scales, stochastic rounding on the gradient path) run through the whole
// pipeline and train like fp32 coefficients of the same k: the rounding
// error is noise on a few percent of the residual stream, so the loss
// curve stays within 0.5% of the exact codec's (measured: 0.02% int4,
// 0.08% int3 over 12 steps of the tiny model), while the runs do differ
// (the coefficients really are quantized).
func TestSubspaceLowBitTrains(t *testing.T) {
	c := tinyConfig(t)
	c.Run.Steps = 12
	c.Pipeline.Stages = 2
	c.Compression.Method = compression.MethodSubspace
	c.Compression.Rank = 8
	c.Compression.Precision = compression.FP32
	ref, _ := stateOf(t, c)
	for _, prec := range []compression.Precision{compression.Int4, compression.Int3} {
		t.Run("precision="+prec.String(), func(t *testing.T) {
			c.Compression.Precision = prec
			got, _ := stateOf(t, c)
			if len(got) != len(ref) {
				t.Fatalf("%d loss values, fp32 run had %d", len(got), len(ref))
			}
			same := true
			for i := range ref {
				if d := math.Abs(got[i]-ref[i]) / ref[i]; d > 0.005 {
					t.Errorf("loss value %d: %s %v, fp32 %v (%.1f%% apart)", i, prec, got[i], ref[i], 100*d)
				}
				same = same && got[i] == ref[i]
			}
			var worst float64
			for i := range ref {
				worst = max(worst, math.Abs(got[i]-ref[i])/ref[i])
			}
			t.Logf("%s: %d loss values, at most %.2f%% from fp32", prec, len(ref), 100*worst)
			if same {
				t.Errorf("%s run is identical to the fp32 run: the coefficients were not quantized", prec)
			}
		})
	}
}
