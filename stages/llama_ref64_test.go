package stages

import "math"

// llamaLoss is a slow, obviously correct float64 forward pass of a whole
// Llama written from Hugging Face's modeling_llama.py (LlamaRMSNorm,
// rotate_half/apply_rotary_pos_emb, repeat_kv, eager attention, LlamaMLP),
// independent of the float32 layers, on the ref64 parameter map. The
// end-to-end gradient check differentiates it numerically.
func (r *ref64) llamaLoss(B, T int, tokens, targets []int32) float64 {
	cfg := r.cfg
	C, NH, KVH, V, I := cfg.NEmbd, cfg.NHead, cfg.NKVHead, cfg.VocabSize, cfg.IntermediateSize
	N, hs := B*T, C/NH
	rms := func(x []float64, w string) []float64 {
		W := r.p[w]
		y := make([]float64, len(x))
		for n := 0; n < len(x)/C; n++ {
			ms := 0.0
			for _, a := range x[n*C : n*C+C] {
				ms += a * a
			}
			s := 1 / math.Sqrt(ms/float64(C)+cfg.RMSNormEps)
			for i := 0; i < C; i++ {
				y[n*C+i] = W[i] * (x[n*C+i] * s)
			}
		}
		return y
	}
	// rope applies q·cos + rotate_half(q)·sin to each head of x (N, nh·hs).
	rope := func(x []float64, nh int) {
		for n := 0; n < N; n++ {
			t := float64(n % T)
			for h := 0; h < nh; h++ {
				v := x[n*nh*hs+h*hs : n*nh*hs+h*hs+hs]
				o := append([]float64(nil), v...)
				for i := 0; i < hs; i++ {
					ang := t / math.Pow(cfg.RopeTheta, float64(2*(i%(hs/2)))/float64(hs))
					var rot float64 // rotate_half(v) = cat(−v[hs/2:], v[:hs/2])
					if i < hs/2 {
						rot = -o[i+hs/2]
					} else {
						rot = o[i-hs/2]
					}
					v[i] = o[i]*math.Cos(ang) + rot*math.Sin(ang)
				}
			}
		}
	}
	emb := r.p[llamaEmbedName]
	x := make([]float64, N*C)
	for n := 0; n < N; n++ {
		copy(x[n*C:n*C+C], emb[int(tokens[n])*C:int(tokens[n])*C+C])
	}
	for l := 0; l < cfg.NLayer; l++ {
		p := "model.layers." + itoa(l) + "."
		h := rms(x, p+"input_layernorm.weight")
		q := r.linear(h, N, C, NH*hs, p+"self_attn.q_proj.weight", "")
		k := r.linear(h, N, C, KVH*hs, p+"self_attn.k_proj.weight", "")
		v := r.linear(h, N, C, KVH*hs, p+"self_attn.v_proj.weight", "")
		rope(q, NH)
		rope(k, KVH)
		y := make([]float64, N*C)
		for b := 0; b < B; b++ {
			for hd := 0; hd < NH; hd++ {
				g := hd / (NH / KVH) // repeat_kv
				for t := 0; t < T; t++ {
					qv := q[(b*T+t)*NH*hs+hd*hs:]
					sc := make([]float64, t+1)
					mx := math.Inf(-1)
					for u := 0; u <= t; u++ {
						kv := k[(b*T+u)*KVH*hs+g*hs:]
						s := 0.0
						for i := 0; i < hs; i++ {
							s += qv[i] * kv[i]
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
						vv := v[(b*T+u)*KVH*hs+g*hs:]
						for i := 0; i < hs; i++ {
							y[(b*T+t)*C+hd*hs+i] += sc[u] / sum * vv[i]
						}
					}
				}
			}
		}
		a := r.linear(y, N, C, C, p+"self_attn.o_proj.weight", "")
		for i := range x {
			x[i] += a[i]
		}
		h = rms(x, p+"post_attention_layernorm.weight")
		gt := r.linear(h, N, C, I, p+"mlp.gate_proj.weight", "")
		up := r.linear(h, N, C, I, p+"mlp.up_proj.weight", "")
		for i, g := range gt {
			gt[i] = g / (1 + math.Exp(-g)) * up[i]
		}
		m := r.linear(gt, N, I, C, p+"mlp.down_proj.weight", "")
		for i := range x {
			x[i] += m[i]
		}
	}
	h := rms(x, llamaNormName)
	head := llamaEmbedName
	if cfg.UntiedEmbeddings {
		head = lmHeadName
	}
	logits := r.linear(h, N, C, V, head, "")
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
