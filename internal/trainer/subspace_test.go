package trainer

import (
	"math"
	"testing"
)

// TestSubspaceCodecIsExact: for the constrained model, sending k fp32
// coefficients per token (plus the ids) forward and Uᵀg backward trains
// exactly like sending the whole fp32 residual stream both ways.
func TestSubspaceCodecIsExact(t *testing.T) {
	c := tinyConfig(t)
	c.Run.Steps = 10
	c.Model.NLayer = 3
	c.Pipeline.Stages = 3
	c.Compression.Method = "subspace"
	c.Compression.Rank = "8"
	c.Compression.Precision = "fp32"
	wireLoss, wireState := stateOf(t, c)
	constrainOnly = true
	defer func() { constrainOnly = false }()
	refLoss, refState := stateOf(t, c)
	for i := range refLoss {
		if d := math.Abs(wireLoss[i]-refLoss[i]) / refLoss[i]; d > 1e-5 {
			t.Errorf("loss value %d: subspace codec %v, fp32 links %v", i, wireLoss[i], refLoss[i])
		}
	}
	compareStates(t, refState, wireState, 1e-5)

	// And the constraint is real: the model differs from an unconstrained one.
	c.Compression.Method = "none"
	constrainOnly = false
	freeLoss, _ := stateOf(t, c)
	if math.Abs(freeLoss[len(freeLoss)-1]-refLoss[len(refLoss)-1]) < 1e-6 {
		t.Error("the constrained model trained exactly like the unconstrained one: the constraint does nothing")
	}
}
