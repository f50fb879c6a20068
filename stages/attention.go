package stages

import (
	"math"

	"github.com/narrowband/narrowband/stages/kernels"
)

// attentionForward is causal multi-head self-attention on the packed
// q, k, v projections. att keeps the softmax probabilities for the backward
// pass (zero above the diagonal); no separate pre-softmax buffer is kept:
// the scores are turned into probabilities in place. The B·NH heads run in
// parallel, each writing only its own columns of out.
//
//	out (B, T, C), att (B, NH, T, T), qkv (B, T, 3C)
func attentionForward(x *exec, out, att, qkv []float32, B, T, C, NH int) {
	x.attnJob = attnJob{out: out, att: att, qkv: qkv, T: T, C: C, NH: NH}
	parallelFor(&x.wg, B*NH, 1, &x.attnJob)
}

// attentionBackward writes the gradient wrt qkv into dqkv (each head
// writes its own q, k and v columns once, so no clearing is needed). scratch holds
// 2·T·T floats per pool chunk (see poolSize) for dL/datt and dL/dscores,
// which live only while one head is processed.
//
//	dqkv (B, T, 3C), dout (B, T, C), qkv (B, T, 3C), att (B, NH, T, T)
func attentionBackward(x *exec, dqkv, dout, qkv, att, scratch []float32, B, T, C, NH int) {
	x.attnJob = attnJob{out: dqkv, dout: dout, att: att, qkv: qkv, scratch: scratch, T: T, C: C, NH: NH, backward: true}
	parallelFor(&x.wg, B*NH, 1, &x.attnJob)
}

type attnJob struct {
	out, dout, att, qkv, scratch []float32
	T, C, NH                     int
	backward                     bool
}

func (j *attnJob) run(chunk, lo, hi int) {
	T, C, NH := j.T, j.C, j.NH
	hs := C / NH
	C3 := 3 * C
	scale := float32(1 / math.Sqrt(float64(hs)))
	for bh := lo; bh < hi; bh++ {
		b, h := bh/NH, bh%NH
		q := j.qkv[b*T*C3+h*hs:]
		k := j.qkv[b*T*C3+C+h*hs:]
		v := j.qkv[b*T*C3+2*C+h*hs:]
		a := j.att[bh*T*T : (bh+1)*T*T]
		if !j.backward {
			// scores = q·kᵀ/√hs, then a causal softmax per row in place.
			kernels.Sgemm(false, true, T, T, hs, scale, q, C3, k, C3, 0, a, T)
			for t := 0; t < T; t++ {
				row := a[t*T : t*T+T]
				maxv := row[0]
				for _, x := range row[:t+1] {
					maxv = max(maxv, x)
				}
				var sum float32
				for i, x := range row[:t+1] {
					e := expf(x - maxv)
					row[i] = e
					sum += e
				}
				inv := 1 / sum
				for i := range row[:t+1] {
					row[i] *= inv
				}
				clear(row[t+1:])
			}
			out := j.out[b*T*C+h*hs:]
			kernels.Sgemm(false, false, T, hs, T, 1, a, T, v, C3, 0, out, C)
			continue
		}
		datt := j.scratch[chunk*2*T*T : chunk*2*T*T+T*T]
		dpre := j.scratch[chunk*2*T*T+T*T : (chunk+1)*2*T*T]
		dout := j.dout[b*T*C+h*hs:]
		dq := j.out[b*T*C3+h*hs:]
		dk := j.out[b*T*C3+C+h*hs:]
		dv := j.out[b*T*C3+2*C+h*hs:]
		kernels.Sgemm(false, true, T, T, hs, 1, dout, C, v, C3, 0, datt, T)
		kernels.Sgemm(true, false, T, hs, T, 1, a, T, dout, C, 0, dv, C3)
		// Softmax backward: dpre = a ⊙ (datt − Σ a·datt) on the causal part.
		for t := 0; t < T; t++ {
			ar := a[t*T : t*T+t+1]
			dr := datt[t*T : t*T+t+1]
			var dot float32
			for i, x := range ar {
				dot += x * dr[i]
			}
			pr := dpre[t*T : t*T+T]
			for i, x := range ar {
				pr[i] = x * (dr[i] - dot)
			}
			clear(pr[t+1:])
		}
		kernels.Sgemm(false, false, T, hs, T, scale, dpre, T, k, C3, 0, dq, C3)
		kernels.Sgemm(true, false, T, hs, T, scale, dpre, T, q, C3, 0, dk, C3)
	}
}
