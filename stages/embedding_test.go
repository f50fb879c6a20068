package stages

import (
	"math/rand/v2"
	"testing"
)

func TestEncoderGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	B, T, C, V := 2, 3, 4, 5
	wte, wpe := randVec(r, V*C, 1), randVec(r, T*C, 1)
	tokens := []int32{1, 4, 1, 0, 1, 3} // repeated tokens accumulate
	proj := randVec(r, B*T*C, 1)
	out := make([]float32, B*T*C)
	f := func() float64 { encoderForward(out, tokens, wte, wpe, B, T, C); return dot64(out, proj) }
	dwte, dwpe := make([]float32, V*C), make([]float32, T*C)
	encoderBackward(dwte, dwpe, proj, tokens, B, T, C)
	checkGrad(t, "dwte", wte, dwte, f)
	checkGrad(t, "dwpe", wpe, dwpe, f)
}

func TestTokenEmbedGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	N, C, V := 6, 4, 5
	wte := randVec(r, V*C, 1)
	tokens := []int32{1, 4, 1, 0, 1, 3} // repeated tokens accumulate
	proj := randVec(r, N*C, 1)
	out := make([]float32, N*C)
	f := func() float64 { tokenEmbedForward(out, tokens, wte, N, C); return dot64(out, proj) }
	dwte := make([]float32, V*C)
	tokenEmbedBackward(dwte, proj, tokens, N, C)
	checkGrad(t, "dwte", wte, dwte, f)
}
