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
	x.attnJob = mhaJob(out, nil, att, qkv, nil, T, C, NH, false)
	parallelFor(&x.par, B*NH, 1, &x.attnJob)
}

// attentionForwardGQA is causal grouped-query attention (Hugging Face's
// repeat_kv without the copies): query head h reads key/value head
// h/(NH/KVH). qkv rows hold NH query heads, then KVH key heads, then KVH
// value heads, each hs wide, as the fused q_proj/k_proj/v_proj product
// writes them. With KVH = NH it is attentionForward's arithmetic exactly.
//
//	out (B, T, NH·hs), att (B, NH, T, T), qkv (B, T, (NH + 2·KVH)·hs)
func attentionForwardGQA(x *exec, out, att, qkv []float32, B, T, NH, KVH, hs int) {
	x.attnJob = gqaJob(out, nil, att, qkv, nil, T, NH, KVH, hs, false)
	parallelFor(&x.par, B*NH, 1, &x.attnJob)
}

// attentionBackwardGQA is attentionForwardGQA's backward: it writes dqkv
// (every entry). A key/value head's gradient sums over the query heads of
// its group, in head order, so work is split by (batch, group).
//
//	dqkv (B, T, (NH + 2·KVH)·hs), dout (B, T, NH·hs), qkv as forward, att (B, NH, T, T)
func attentionBackwardGQA(x *exec, dqkv, dout, qkv, att, scratch []float32, B, T, NH, KVH, hs int) {
	x.attnJob = gqaJob(dqkv, dout, att, qkv, scratch, T, NH, KVH, hs, true)
	parallelFor(&x.par, B*KVH, 1, &x.attnJob)
}

func gqaJob(out, dout, att, qkv, scratch []float32, T, NH, KVH, hs int, backward bool) attnJob {
	return attnJob{out: out, dout: dout, att: att, qkv: qkv, scratch: scratch, T: T, C: NH * hs, NH: NH, KVH: KVH,
		hs: hs, qs: (NH + 2*KVH) * hs, koff: NH * hs, voff: (NH + KVH) * hs, backward: backward}
}

// attentionBackward writes the gradient wrt qkv into dqkv (each head
// writes its own q, k and v columns once, so no clearing is needed). scratch holds
// 2·T·T floats per pool chunk (see poolSize) for dL/datt and dL/dscores,
// which live only while one head is processed.
//
//	dqkv (B, T, 3C), dout (B, T, C), qkv (B, T, 3C), att (B, NH, T, T)
func attentionBackward(x *exec, dqkv, dout, qkv, att, scratch []float32, B, T, C, NH int) {
	x.attnJob = mhaJob(dqkv, dout, att, qkv, scratch, T, C, NH, true)
	parallelFor(&x.par, B*NH, 1, &x.attnJob)
}

// mhaJob is GPT-2's multi-head attention on its packed (B, T, 3C) qkv.
func mhaJob(out, dout, att, qkv, scratch []float32, T, C, NH int, backward bool) attnJob {
	return attnJob{out: out, dout: dout, att: att, qkv: qkv, scratch: scratch, T: T, C: C, NH: NH, KVH: NH,
		hs: C / NH, qs: 3 * C, koff: C, voff: 2 * C, backward: backward}
}

// attnJob is one attention pass. The forward runs per (batch, query head),
// the backward per (batch, key/value head). C is the row stride of out /
// dout (NH·hs), qs that of qkv, koff and voff where the key and value heads
// start in a qkv row. GPT-2's packed (3C) layout is KVH = NH, qs = 3C,
// koff = C, voff = 2C.
type attnJob struct {
	out, dout, att, qkv, scratch []float32
	T, C, NH, KVH                int
	hs, qs, koff, voff           int
	backward                     bool
}

// attnBlock is the row-block height of the causal attention products.
// Query rows [i0, i1) only see keys [0, i1), so cutting T into blocks of
// attnBlock rows skips the masked upper triangle in whole blocks: with
// T = 128 the products do 62.5% of the full T×T work, while each one stays
// large enough (≥ 32 rows) for Sgemm's 6×16 tiles to run near full speed.
const attnBlock = 32

func (j *attnJob) run(chunk, lo, hi int) {
	if j.backward {
		j.runBackward(chunk, lo, hi)
		return
	}
	T, C, NH, hs, C3 := j.T, j.C, j.NH, j.hs, j.qs
	rep := NH / j.KVH
	scale := float32(1 / math.Sqrt(float64(hs)))
	for bh := lo; bh < hi; bh++ {
		b, h := bh/NH, bh%NH
		g := h / rep
		q := j.qkv[b*T*C3+h*hs:]
		k := j.qkv[b*T*C3+j.koff+g*hs:]
		v := j.qkv[b*T*C3+j.voff+g*hs:]
		a := j.att[bh*T*T : (bh+1)*T*T]
		out := j.out[b*T*C+h*hs:]
		for i0 := 0; i0 < T; i0 += attnBlock {
			i1 := min(i0+attnBlock, T)
			// scores = q·kᵀ/√hs for rows [i0, i1) against keys [0, i1),
			// then a causal softmax per row in place, then ·v.
			kernels.Sgemm(false, true, i1-i0, i1, hs, scale, q[i0*C3:], C3, k, C3, 0, a[i0*T:], T)
			for t := i0; t < i1; t++ {
				softmaxCausalRow(a[t*T:t*T+T], t)
			}
			kernels.Sgemm(false, false, i1-i0, hs, i1, 1, a[i0*T:], T, v, C3, 0, out[i0*C:], C)
		}
	}
}

// runBackward does (batch, key/value head) pairs [lo, hi): for each query
// head of the group in order, dq of that head, and dk, dv of the group
// (written by the first head, added to by the others).
func (j *attnJob) runBackward(chunk, lo, hi int) {
	T, C, NH, hs, C3 := j.T, j.C, j.NH, j.hs, j.qs
	rep := NH / j.KVH
	scale := float32(1 / math.Sqrt(float64(hs)))
	datt := j.scratch[chunk*2*T*T : chunk*2*T*T+T*T]
	dpre := j.scratch[chunk*2*T*T+T*T : (chunk+1)*2*T*T]
	for bg := lo; bg < hi; bg++ {
		b, g := bg/j.KVH, bg%j.KVH
		k := j.qkv[b*T*C3+j.koff+g*hs:]
		v := j.qkv[b*T*C3+j.voff+g*hs:]
		dk := j.out[b*T*C3+j.koff+g*hs:]
		dv := j.out[b*T*C3+j.voff+g*hs:]
		for r := 0; r < rep; r++ {
			h := g*rep + r
			var beta float32 // the group's first head writes dk, dv
			if r > 0 {
				beta = 1
			}
			q := j.qkv[b*T*C3+h*hs:]
			a := j.att[(b*NH+h)*T*T : (b*NH+h+1)*T*T]
			dout := j.dout[b*T*C+h*hs:]
			dq := j.out[b*T*C3+h*hs:]
			for i0 := 0; i0 < T; i0 += attnBlock {
				i1 := min(i0+attnBlock, T)
				// datt = dout·vᵀ on the causal block rows, then the softmax
				// backward dpre = a ⊙ (datt − Σ a·datt) row by row.
				kernels.Sgemm(false, true, i1-i0, i1, hs, 1, dout[i0*C:], C, v, C3, 0, datt[i0*T:], T)
				for t := i0; t < i1; t++ {
					softmaxCausalRowBackward(dpre[t*T:t*T+T], a[t*T:t*T+T], datt[t*T:t*T+T], t)
				}
				// dq rows [i0, i1) = dpre[i0:i1, 0:i1]·k[0:i1]·scale.
				kernels.Sgemm(false, false, i1-i0, hs, i1, scale, dpre[i0*T:], T, k, C3, 0, dq[i0*C3:], C3)
			}
			for j0 := 0; j0 < T; j0 += attnBlock {
				j1 := min(j0+attnBlock, T)
				// Key rows [j0, j1) receive from query rows [j0, T) only:
				// dv = aᵀ·dout and dk = dpreᵀ·q·scale over those rows.
				kernels.Sgemm(true, false, j1-j0, hs, T-j0, 1, a[j0*T+j0:], T, dout[j0*C:], C, beta, dv[j0*C3:], C3)
				kernels.Sgemm(true, false, j1-j0, hs, T-j0, scale, dpre[j0*T+j0:], T, q[j0*C3:], C3, beta, dk[j0*C3:], C3)
			}
		}
	}
}

// softmaxCausalRow turns row t of the scores into probabilities over
// positions [0, t] in place and zeroes the masked positions after t.
func softmaxCausalRow(row []float32, t int) {
	softmaxInPlace(row[:t+1])
	clear(row[t+1:])
}

// softmaxRef turns x into softmax(x) in place and returns max(x) and
// Σ e^(x − max) (cross-entropy's log-sum-exp): the portable loop, and the
// reference softmaxInPlace is tested against.
func softmaxRef(x []float32) (maxv, sum float32) {
	maxv = x[0]
	for _, v := range x {
		maxv = max(maxv, v)
	}
	for i, v := range x {
		e := expf(v - maxv)
		x[i] = e
		sum += e
	}
	inv := 1 / sum
	for i := range x {
		x[i] *= inv
	}
	return maxv, sum
}

// softmaxCausalRowBackward writes dpre = a ⊙ (datt − Σ a·datt) for row t
// (positions [0, t]) and zeroes the rest of the row, which the dk product
// reads.
func softmaxCausalRowBackward(dpre, a, datt []float32, t int) {
	ar, dr := a[:t+1], datt[:t+1]
	var dot float32
	for i, x := range ar {
		dot += x * dr[i]
	}
	pr := dpre[:t+1]
	for i, x := range ar {
		pr[i] = x * (dr[i] - dot)
	}
	clear(dpre[t+1:])
}

// attentionForwardRef is the plain-loop causal attention the fast one is
// tested against: for each (b, h, t), probabilities over positions ≤ t,
// then their mix of v. Same layouts as attentionForward.
func attentionForwardRef(out, att, qkv []float32, B, T, C, NH int) {
	hs, C3 := C/NH, 3*C
	scale := 1 / math.Sqrt(float64(hs))
	for b := 0; b < B; b++ {
		for h := 0; h < NH; h++ {
			a := att[(b*NH+h)*T*T:]
			for t := 0; t < T; t++ {
				q := qkv[(b*T+t)*C3+h*hs:]
				row := a[t*T : t*T+T]
				maxv := math.Inf(-1)
				for u := 0; u <= t; u++ {
					k := qkv[(b*T+u)*C3+C+h*hs:]
					var s float64
					for i := 0; i < hs; i++ {
						s += float64(q[i]) * float64(k[i])
					}
					row[u] = float32(s * scale)
					maxv = math.Max(maxv, float64(row[u]))
				}
				var sum float64
				for u := 0; u <= t; u++ {
					sum += math.Exp(float64(row[u]) - maxv)
				}
				for u := range row {
					if u <= t {
						row[u] = float32(math.Exp(float64(row[u])-maxv) / sum)
					} else {
						row[u] = 0
					}
				}
				o := out[(b*T+t)*C+h*hs:]
				for i := 0; i < hs; i++ {
					var s float64
					for u := 0; u <= t; u++ {
						s += float64(row[u]) * float64(qkv[(b*T+u)*C3+2*C+h*hs+i])
					}
					o[i] = float32(s)
				}
			}
		}
	}
}

// attentionBackwardRef is the plain-loop backward of attentionForwardRef:
// it writes dqkv (every entry) from dout and the saved probabilities att.
func attentionBackwardRef(dqkv, dout, qkv, att []float32, B, T, C, NH int) {
	hs, C3 := C/NH, 3*C
	scale := 1 / math.Sqrt(float64(hs))
	clear(dqkv[:B*T*C3])
	datt := make([]float64, T)
	for b := 0; b < B; b++ {
		for h := 0; h < NH; h++ {
			a := att[(b*NH+h)*T*T:]
			for t := 0; t < T; t++ {
				do := dout[(b*T+t)*C+h*hs:]
				var dot float64
				for u := 0; u <= t; u++ {
					v := qkv[(b*T+u)*C3+2*C+h*hs:]
					dv := dqkv[(b*T+u)*C3+2*C+h*hs:]
					var s float64
					for i := 0; i < hs; i++ {
						s += float64(do[i]) * float64(v[i])
						dv[i] += a[t*T+u] * do[i]
					}
					datt[u] = s
					dot += float64(a[t*T+u]) * s
				}
				q := qkv[(b*T+t)*C3+h*hs:]
				dq := dqkv[(b*T+t)*C3+h*hs:]
				for u := 0; u <= t; u++ {
					dpre := float64(a[t*T+u]) * (datt[u] - dot) * scale
					k := qkv[(b*T+u)*C3+C+h*hs:]
					dk := dqkv[(b*T+u)*C3+C+h*hs:]
					for i := 0; i < hs; i++ {
						dq[i] += float32(dpre * float64(k[i]))
						dk[i] += float32(dpre * float64(q[i]))
					}
				}
			}
		}
	}
}
