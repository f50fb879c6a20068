package stages

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestRopeGrad(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(31, 32))
	B, T, nh, hs := 2, 5, 3, 6
	qs := nh*hs + 4 // the row holds values after the rotated heads
	cos, sin := make([]float32, T*hs/2), make([]float32, T*hs/2)
	ropeTables(cos, sin, T, hs, 10000)
	inp, proj := randVec(r, B*T*qs, 1), randVec(r, B*T*qs, 1)
	out := make([]float32, len(inp))
	f := func() float64 {
		copy(out, inp)
		ropeForward(&x, out, cos, sin, B*T, T, nh, hs, qs)
		return dot64(out, proj)
	}
	f()
	d := append([]float32(nil), proj...)
	ropeBackward(&x, d, cos, sin, B*T, T, nh, hs, qs)
	checkGrad(t, "dinp", inp, d, f)
}

// The rotation is Hugging Face's: q·cos + rotate_half(q)·sin with
// rotate_half(q) = cat(−q[hs/2:], q[:hs/2]) and the angle t/θ^(2i/hs)
// repeated over both halves, written here from the formula in float64.
func TestRopeMatchesHFFormula(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(33, 34))
	T, nh, hs, theta := 37, 2, 8, 500000.0
	qs := nh * hs
	cos, sin := make([]float32, T*hs/2), make([]float32, T*hs/2)
	ropeTables(cos, sin, T, hs, theta)
	q := randVec(r, T*qs, 1)
	got := append([]float32(nil), q...)
	ropeForward(&x, got, cos, sin, T, T, nh, hs, qs)
	want := make([]float32, len(q))
	for tt := 0; tt < T; tt++ {
		for h := 0; h < nh; h++ {
			v := q[tt*qs+h*hs : tt*qs+h*hs+hs]
			for i := 0; i < hs; i++ {
				ang := float64(tt) / math.Pow(theta, float64(2*(i%(hs/2)))/float64(hs))
				rot := -float64(v[(i+hs/2)%hs])
				if i >= hs/2 {
					rot = float64(v[i-hs/2])
				}
				want[tt*qs+h*hs+i] = float32(float64(v[i])*math.Cos(ang) + rot*math.Sin(ang))
			}
		}
	}
	// float32 angles (as Hugging Face rounds them) at t ≤ 36: ≤ 3e-6 off.
	assertClose(t, "rope", got, want, 1e-5)
	ropeBackward(&x, got, cos, sin, T, T, nh, hs, qs)
	assertClose(t, "rope then its inverse", got, q, 1e-6)
}
