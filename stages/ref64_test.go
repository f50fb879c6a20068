package stages

import "math"

// ref64 is a slow, obviously correct float64 GPT forward pass written
// straight from nanoGPT's model.py, independent of the float32 layers. The
// end-to-end gradient check differentiates it numerically.
type ref64 struct {
	cfg Config
	p   map[string][]float64
}

func newRef64(cfg Config, params []*Param) *ref64 {
	r := &ref64{cfg: cfg, p: map[string][]float64{}}
	for _, p := range params {
		v := make([]float64, len(p.Data))
		for i, x := range p.Data {
			v[i] = float64(x)
		}
		r.p[p.Name] = v
	}
	return r
}

func (r *ref64) linear(x []float64, N, in, out int, w, b string) []float64 {
	W, bias := r.p[w], r.p[b]
	y := make([]float64, N*out)
	for n := 0; n < N; n++ {
		for o := 0; o < out; o++ {
			s := 0.0
			if bias != nil {
				s = bias[o]
			}
			for i := 0; i < in; i++ {
				s += x[n*in+i] * W[o*in+i]
			}
			y[n*out+o] = s
		}
	}
	return y
}

func (r *ref64) layernorm(x []float64, N, C int, w, b string) []float64 {
	W, bias := r.p[w], r.p[b]
	y := make([]float64, N*C)
	for n := 0; n < N; n++ {
		row := x[n*C : n*C+C]
		m, v := 0.0, 0.0
		for _, a := range row {
			m += a
		}
		m /= float64(C)
		for _, a := range row {
			v += (a - m) * (a - m)
		}
		v /= float64(C)
		for i, a := range row {
			y[n*C+i] = (a - m) / math.Sqrt(v+lnEps) * W[i]
			if bias != nil {
				y[n*C+i] += bias[i]
			}
		}
	}
	return y
}

// loss is the mean cross-entropy of the whole model on a batch.
func (r *ref64) loss(B, T int, tokens, targets []int32) float64 {
	C, NH, V := r.cfg.NEmbd, r.cfg.NHead, r.cfg.VocabSize
	N, hs := B*T, C/NH
	wte, wpe := r.p[wteName], r.p[wpeName]
	x := make([]float64, N*C)
	for n := 0; n < N; n++ {
		for c := 0; c < C; c++ {
			x[n*C+c] = wte[int(tokens[n])*C+c] + wpe[(n%T)*C+c]
		}
	}
	for l := 0; l < r.cfg.NLayer; l++ {
		p := "transformer.h." + itoa(l) + "."
		h := r.layernorm(x, N, C, p+"ln_1.weight", p+"ln_1.bias")
		qkv := r.linear(h, N, C, 3*C, p+"attn.c_attn.weight", p+"attn.c_attn.bias")
		y := make([]float64, N*C)
		for b := 0; b < B; b++ {
			for hd := 0; hd < NH; hd++ {
				for t := 0; t < T; t++ {
					q := qkv[(b*T+t)*3*C+hd*hs:]
					sc := make([]float64, t+1)
					mx := math.Inf(-1)
					for u := 0; u <= t; u++ {
						k := qkv[(b*T+u)*3*C+C+hd*hs:]
						s := 0.0
						for i := 0; i < hs; i++ {
							s += q[i] * k[i]
						}
						sc[u] = s / math.Sqrt(float64(hs))
						mx = math.Max(mx, sc[u])
					}
					sum := 0.0
					for u := range sc {
						sc[u] = math.Exp(sc[u] - mx)
						sum += sc[u]
					}
					for u := range sc {
						v := qkv[(b*T+u)*3*C+2*C+hd*hs:]
						for i := 0; i < hs; i++ {
							y[(b*T+t)*C+hd*hs+i] += sc[u] / sum * v[i]
						}
					}
				}
			}
		}
		a := r.linear(y, N, C, C, p+"attn.c_proj.weight", p+"attn.c_proj.bias")
		for i := range x {
			x[i] += a[i]
		}
		h = r.layernorm(x, N, C, p+"ln_2.weight", p+"ln_2.bias")
		f := r.linear(h, N, C, 4*C, p+"mlp.c_fc.weight", p+"mlp.c_fc.bias")
		for i, v := range f {
			f[i] = 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v)))
		}
		m := r.linear(f, N, 4*C, C, p+"mlp.c_proj.weight", p+"mlp.c_proj.bias")
		for i := range x {
			x[i] += m[i]
		}
	}
	h := r.layernorm(x, N, C, "transformer.ln_f.weight", "transformer.ln_f.bias")
	logits := r.linear(h, N, C, V, wteName, "")
	total := 0.0
	for n := 0; n < N; n++ {
		row := logits[n*V : n*V+V]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, v)
		}
		s := 0.0
		for _, v := range row {
			s += math.Exp(v - mx)
		}
		total += math.Log(s) + mx - row[targets[n]]
	}
	return total / float64(N)
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
