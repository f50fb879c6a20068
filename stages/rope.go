package stages

import "math"

// ropeTables fills cos and sin (maxT, hs/2) for rotary position
// embeddings with base theta, as Hugging Face's LlamaRotaryEmbedding
// computes them: inv_freq[i] = 1/theta^(2i/hs) and the angle t·inv_freq[i]
// in float32 (so long contexts see the same rounded angles as a Hugging
// Face model), then cos and sin of that angle. Hugging Face's table is
// cat(freqs, freqs): both halves of a head share angle i, so half the
// table is enough.
//
//	cos, sin (maxT, hs/2)
func ropeTables(cos, sin []float32, maxT, hs int, theta float64) {
	half := hs / 2
	for i := 0; i < half; i++ {
		e := float32(2*i) / float32(hs)
		inv := 1 / float32(math.Pow(theta, float64(e)))
		for t := 0; t < maxT; t++ {
			a := float64(float32(t) * inv)
			cos[t*half+i] = float32(math.Cos(a))
			sin[t*half+i] = float32(math.Sin(a))
		}
	}
}

// ropeForward rotates, in place, the first nh heads (the queries, then
// the keys) of every qkv row by the angles of the row's position t = row
// mod T: Hugging Face's q·cos + rotate_half(q)·sin, which for i < hs/2 is
//
//	x[i], x[i+hs/2] = x[i]·c − x[i+hs/2]·s, x[i+hs/2]·c + x[i]·s
//
// with c, s = cos[t][i], sin[t][i]. The values are left alone.
//
//	qkv (N, qs) with N = B·T, cos, sin (maxT, hs/2)
func ropeForward(x *exec, qkv, cos, sin []float32, N, T, nh, hs, qs int) {
	x.ropeJob = ropeJob{qkv: qkv, cos: cos, sin: sin, T: T, nh: nh, hs: hs, qs: qs}
	parallelFor(&x.par, N, 16, &x.ropeJob)
}

// ropeBackward turns, in place, dL/d(rotated q, k) into dL/d(q, k) before
// the rotation: the rotation is orthogonal, so its backward is the
// rotation by the opposite angles. The value gradients are left alone.
//
//	dqkv (N, qs), cos, sin (maxT, hs/2)
func ropeBackward(x *exec, dqkv, cos, sin []float32, N, T, nh, hs, qs int) {
	x.ropeJob = ropeJob{qkv: dqkv, cos: cos, sin: sin, T: T, nh: nh, hs: hs, qs: qs, backward: true}
	parallelFor(&x.par, N, 16, &x.ropeJob)
}

type ropeJob struct {
	qkv, cos, sin []float32
	T, nh, hs, qs int
	backward      bool
}

func (j *ropeJob) run(_, lo, hi int) {
	half := j.hs / 2
	for n := lo; n < hi; n++ {
		t := n % j.T
		c, s := j.cos[t*half:t*half+half], j.sin[t*half:t*half+half]
		row := j.qkv[n*j.qs : n*j.qs+j.nh*j.hs]
		for h := 0; h < j.nh; h++ {
			x1 := row[h*j.hs : h*j.hs+half]
			x2 := row[h*j.hs+half : h*j.hs+j.hs]
			if j.backward {
				ropeRowBackward(x1, x2, c, s)
			} else {
				ropeRowForward(x1, x2, c, s)
			}
		}
	}
}

// ropeRowForward rotates one head: x1 is its first half, x2 its second.
func ropeRowForward(x1, x2, c, s []float32) {
	x2, c, s = x2[:len(x1)], c[:len(x1)], s[:len(x1)]
	for i, a := range x1 {
		b := x2[i]
		x1[i] = a*c[i] - b*s[i]
		x2[i] = b*c[i] + a*s[i]
	}
}

// ropeRowBackward rotates one head's gradient back.
func ropeRowBackward(d1, d2, c, s []float32) {
	d2, c, s = d2[:len(d1)], c[:len(d1)], s[:len(d1)]
	for i, a := range d1 {
		b := d2[i]
		d1[i] = a*c[i] + b*s[i]
		d2[i] = b*c[i] - a*s[i]
	}
}
