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
		// The Llama layers: RMSNorm, RoPE, SwiGLU, grouped-query attention
		// (NH = 4 query heads on 2 key/value heads of hs = C/NH).
		rout, rr := make([]float32, N*C), make([]float32, N)
		x.rmsJob = rmsJob{out: rout, rstd: rr, inp: inp, weight: w, C: C, eps: 1e-5}
		do(&x.rmsJob, N)
		rdin, rdw := make([]float32, N*C), make([]float32, C)
		x.rmsJob = rmsJob{out: rdin, rstd: rr, inp: inp, weight: w, dweight: rdw, dout: dout, N: N, C: C, backward: true}
		do(&x.rmsJob, N)
		x.rmsJob.params = true
		do(&x.rmsJob, C)
		hs, KVH := C/NH, 2
		qs := (NH + 2*KVH) * hs
		cos, sin := make([]float32, T*hs/2), make([]float32, T*hs/2)
		ropeTables(cos, sin, T, hs, 10000)
		gq := append([]float32(nil), qkv[:N*qs]...)
		x.ropeJob = ropeJob{qkv: gq, cos: cos, sin: sin, T: T, nh: NH + KVH, hs: hs, qs: qs}
		do(&x.ropeJob, N)
		sw := make([]float32, N*C/2)
		x.swigluJob = swigluJob{out: sw, gu: inp, I: C / 2}
		do(&x.swigluJob, N)
		dsw := make([]float32, N*C)
		x.swigluJob = swigluJob{out: dsw, gu: inp, dout: dout, I: C / 2, backward: true}
		do(&x.swigluJob, N)
		gatty, gatt := make([]float32, N*C), make([]float32, B*NH*T*T)
		x.attnJob = gqaJob(gatty, nil, gatt, gq, nil, T, NH, KVH, hs, false)
		do(&x.attnJob, B*NH)
		gd := make([]float32, N*qs)
		x.attnJob = gqaJob(gd, dout, gatt, gq, make([]float32, poolSize()*2*T*T), T, NH, KVH, hs, true)
		do(&x.attnJob, B*KVH)
		return []result{{"layernorm", out}, {"layernorm dinp", din}, {"layernorm dweight", dw}, {"layernorm dbias", db},
			{"gelu", g}, {"attention", atty}, {"attention dqkv", dqkv},
			{"rmsnorm", rout}, {"rmsnorm dinp", rdin}, {"rmsnorm dweight", rdw}, {"rope", gq}, {"swiglu", sw},
			{"swiglu dgu", dsw}, {"gqa attention", gatty}, {"gqa attention dqkv", gd}}
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
