package stages

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Every parallel loop must give the same bits however its range is cut:
// run each layer through the pool, then again as one serial chunk, and
// compare bit for bit. (With one core the pool runs everything serially
// and the test compares serial with serial.)
func TestParallelLoopsAreDeterministic(t *testing.T) {
	var x exec
	r := rand.New(rand.NewPCG(1, 1))
	B, T, C, NH := 3, 16, 32, 4
	N := B * T
	inp, w, b := randVec(r, N*C, 1), randVec(r, C, 1), randVec(r, C, 1)
	dout := randVec(r, N*C, 1)
	qkv := randVec(r, N*3*C, 1)

	type result struct {
		name string
		data []float32
	}
	run := func(serial bool) []result {
		do := func(j rangeJob, n int) {
			if serial {
				j.run(0, 0, n)
			} else {
				parallelFor(&x.par, n, 1, j)
			}
		}
		out, mean, rstd := make([]float32, N*C), make([]float32, N), make([]float32, N)
		x.lnFwdJob = lnFwdJob{out, mean, rstd, inp, w, b, C}
		do(&x.lnFwdJob, N)
		din, dw, db := make([]float32, N*C), make([]float32, C), make([]float32, C)
		x.lnBwdJob = lnBwdJob{din, dw, db, dout, inp, w, mean, rstd, N, C, false}
		do(&x.lnBwdJob, N)
		x.lnBwdJob.params = true
		do(&x.lnBwdJob, C)
		g := make([]float32, N*C)
		x.geluJob = geluJob{out: g, inp: inp}
		do(&x.geluJob, N*C)
		atty, att := make([]float32, N*C), make([]float32, B*NH*T*T)
		x.attnJob = mhaJob(atty, nil, att, qkv, nil, T, C, NH, false)
		do(&x.attnJob, B*NH)
		dqkv := make([]float32, N*3*C)
		x.attnJob = mhaJob(dqkv, dout, att, qkv, make([]float32, poolSize()*2*T*T), T, C, NH, true)
		do(&x.attnJob, B*NH)
		return []result{{"layernorm", out}, {"layernorm dinp", din}, {"layernorm dweight", dw}, {"layernorm dbias", db},
			{"gelu", g}, {"attention", atty}, {"attention dqkv", dqkv}}
	}
	par, ser := run(false), run(true)
	for i := range par {
		for k := range par[i].data {
			if math.Float32bits(par[i].data[k]) != math.Float32bits(ser[i].data[k]) {
				t.Errorf("%s[%d]: %v in parallel, %v serially", par[i].name, k, par[i].data[k], ser[i].data[k])
				break
			}
		}
	}
}
