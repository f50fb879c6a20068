package stages

import (
	"math"
	"math/rand/v2"
	"testing"
)

// quadratic is f(w) = ½ Σ h_i (w_i − c_i)², curvatures spread over two
// decades so that a stale gradient overshoots along the stiff directions.
type quadratic struct{ h, c []float64 }

func newQuadratic(n int) quadratic {
	q := quadratic{h: make([]float64, n), c: make([]float64, n)}
	for i := range n {
		q.h[i] = math.Pow(10, 2*float64(i)/float64(n-1)-1) // 0.1 … 10
		q.c[i] = math.Sin(float64(i) + 1)
	}
	return q
}

func (q quadratic) loss(w []float32) float64 {
	var s float64
	for i, x := range w {
		d := float64(x) - q.c[i]
		s += 0.5 * q.h[i] * d * d
	}
	return s
}

// delayedDescent runs steps AdamW steps on q where the gradient applied
// at step t was computed on the forward weights (the params' Data) of
// step t−tau, as in the async pipeline; with corr the optimizer corrects
// for that delay. It returns the loss of the iterate after each step.
func delayedDescent(t *testing.T, q quadratic, corr DelayCorrection, tau, steps int, lr float32) []float64 {
	cfg := DefaultAdamWConfig()
	cfg.WeightDecay = 0
	return delayedDescentWith(t, q, cfg, corr, tau, steps, lr)
}

func delayedDescentWith(t *testing.T, q quadratic, cfg AdamWConfig, corr DelayCorrection, tau, steps int, lr float32) []float64 {
	t.Helper()
	n := len(q.h)
	p := &Param{Name: "w", Shape: []int{n}, Data: make([]float32, n), Grad: make([]float32, n)}
	o, err := NewAdamW([]*Param{p}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.SetDelayCorrection(corr, float64(tau)); err != nil {
		t.Fatal(err)
	}
	hist := [][]float32{append([]float32(nil), p.Data...)} // forward weights after each step
	var losses []float64
	for s := range steps {
		x := hist[max(0, s-tau)]
		for i := range p.Grad {
			p.Grad[i] = float32(q.h[i] * (float64(x[i]) - q.c[i]))
		}
		o.Step(lr)
		hist = append(hist, append([]float32(nil), p.Data...))
		losses = append(losses, q.loss(o.Master()[0].Data))
	}
	return losses
}

// With a delay of 3 steps, running the forwards on the look-ahead reaches
// a lower loss sooner than plain delayed AdamW and ends closer to the
// optimum; without delay both are AdamW.
func TestOptimDelayNesterovBeatsDelayedAdamW(t *testing.T) {
	q := newQuadratic(64)
	const tau, steps = 3, 400
	for _, lr := range []float32{0.01, 0.03, 0.1} {
		plain := delayedDescent(t, q, DelayNone, tau, steps, lr)
		nest := delayedDescent(t, q, DelayNesterov, tau, steps, lr)
		sync := delayedDescent(t, q, DelayNone, 0, steps, lr)
		tail := func(l []float64) float64 { // mean loss over the last quarter
			var s float64
			for _, x := range l[3*len(l)/4:] {
				s += x
			}
			return s / float64(len(l)/4)
		}
		reach := func(l []float64, target float64) int {
			for i, x := range l {
				if x <= target {
					return i + 1
				}
			}
			return len(l) + 1
		}
		target := 0.01 * q.loss(make([]float32, len(q.h)))
		t.Logf("lr %g: final-quarter loss: no delay %.3g, delayed AdamW %.3g, delayed + nesterov %.3g; steps to 1%% of the initial loss: %d, %d, %d",
			lr, tail(sync), tail(plain), tail(nest), reach(sync, target), reach(plain, target), reach(nest, target))
		// For comparison, not asserted: the Pluralis code's optimizer
		// (NAdamW at β1 0.99) on the same delayed gradients.
		nc := DefaultAdamWConfig()
		nc.WeightDecay, nc.Beta1, nc.Nesterov, nc.MomentumDecay = 0, 0.99, true, 0.004
		nadam := delayedDescentWith(t, q, nc, DelayNone, tau, steps, lr)
		t.Logf("lr %g: NAdamW β1 0.99 delayed: final-quarter loss %.3g, steps to 1%%: %d", lr, tail(nadam), reach(nadam, target))
		if tail(nest) >= tail(plain) {
			t.Errorf("lr %g: look-ahead final loss %.3g, not below delayed AdamW's %.3g", lr, tail(nest), tail(plain))
		}
		if reach(nest, target) > reach(plain, target) {
			t.Errorf("lr %g: look-ahead needs %d steps to 1%% of the initial loss, delayed AdamW %d", lr, reach(nest, target), reach(plain, target))
		}
	}
}

// Delay 0 is plain AdamW bit for bit: over several params (one long enough
// for the vector kernel, with and without decay) and many steps.
func TestOptimDelayNesterovZeroIsAdamW(t *testing.T) {
	mk := func() []*Param {
		ps := []*Param{
			{Name: "a", Shape: []int{40003}, Data: make([]float32, 40003), Grad: make([]float32, 40003), Decay: true},
			{Name: "b", Shape: []int{13}, Data: make([]float32, 13), Grad: make([]float32, 13)},
		}
		for _, p := range ps {
			for i := range p.Data {
				p.Data[i] = float32(math.Sin(float64(3*i + len(p.Name))))
			}
		}
		return ps
	}
	pa, pb := mk(), mk()
	a, _ := NewAdamW(pa, DefaultAdamWConfig())
	b, _ := NewAdamW(pb, DefaultAdamWConfig())
	if err := b.SetDelayCorrection(DelayNesterov, 0); err != nil {
		t.Fatal(err)
	}
	for step := 1; step <= 20; step++ {
		for _, ps := range [][]*Param{pa, pb} {
			for _, p := range ps {
				for i := range p.Grad {
					// The gradient depends on the weights, so any difference
					// would grow.
					p.Grad[i] = float32(math.Cos(float64(i*step)))*0.1 + 0.01*p.Data[i]
				}
			}
		}
		a.Step(3e-3)
		b.Step(3e-3)
		for i := range pa {
			for k := range pa[i].Data {
				if math.Float32bits(pa[i].Data[k]) != math.Float32bits(pb[i].Data[k]) {
					t.Fatalf("step %d %s[%d]: nesterov delay 0 %v, adamw %v", step, pa[i].Name, k, pb[i].Data[k], pa[i].Data[k])
				}
			}
		}
	}
	for i, m := range b.Master() {
		for k := range m.Data {
			if m.Data[k] != pb[i].Data[k] {
				t.Fatalf("master %s[%d] = %v, data %v", m.Name, k, m.Data[k], pb[i].Data[k])
			}
		}
	}
}

// The iterate survives a checkpoint: a resumed optimizer under
// DelayNesterov continues exactly, and switching the correction off puts
// the iterate back into the params.
func TestOptimDelayNesterovState(t *testing.T) {
	mk := func() []*Param {
		return []*Param{{Name: "w", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}, Grad: []float32{.1, -.2, .3, -.4, .5, -.6}, Decay: true}}
	}
	pa, pb := mk(), mk()
	a, _ := NewAdamW(pa, DefaultAdamWConfig())
	b, _ := NewAdamW(pb, DefaultAdamWConfig())
	for _, o := range []*AdamW{a, b} {
		if err := o.SetDelayCorrection(DelayNesterov, 2.5); err != nil {
			t.Fatal(err)
		}
	}
	a.Step(0.1)
	a.Step(0.1)
	step, ts := a.State()
	if len(ts) != 3 || ts[2].Name != "optim.w.w" {
		t.Fatalf("state tensors %v, want m, v and the iterate", ts)
	}
	copy(pb[0].Data, pa[0].Data)
	if err := b.LoadState(step, ts); err != nil {
		t.Fatal(err)
	}
	a.Step(0.1)
	b.Step(0.1)
	for i := range pa[0].Data {
		if pa[0].Data[i] != pb[0].Data[i] || a.Master()[0].Data[i] != b.Master()[0].Data[i] {
			t.Fatalf("resumed optimizer diverges at %d", i)
		}
	}
	if a.Master()[0].Data[0] == pa[0].Data[0] {
		t.Error("look-ahead equals the iterate after steps with momentum")
	}
	iterate := append([]float32(nil), a.Master()[0].Data...)
	if err := a.SetDelayCorrection(DelayNone, 0); err != nil {
		t.Fatal(err)
	}
	for i, x := range pa[0].Data {
		if x != iterate[i] {
			t.Fatalf("after DelayNone, Data[%d] = %v, want the iterate %v", i, x, iterate[i])
		}
	}
	for _, bad := range []float64{-1, math.NaN(), math.Inf(1)} {
		if err := a.SetDelayCorrection(DelayNesterov, bad); err == nil {
			t.Errorf("delay %v accepted", bad)
		}
	}
	if err := a.SetDelayCorrection(DelayCorrection(7), 1); err == nil {
		t.Error("unknown correction accepted")
	}
	for _, c := range []DelayCorrection{DelayNone, DelayNesterov} {
		if got, err := ParseDelayCorrection(c.String()); err != nil || got != c {
			t.Errorf("ParseDelayCorrection(%q) = %v, %v", c.String(), got, err)
		}
	}
	if _, err := ParseDelayCorrection("pipemare"); err == nil {
		t.Error("unknown name accepted")
	}
}

func TestOptimDelayNesterovStepAllocatesNothing(t *testing.T) {
	p := []*Param{{Name: "w", Shape: []int{50000}, Data: make([]float32, 50000), Grad: make([]float32, 50000)}}
	o, _ := NewAdamW(p, DefaultAdamWConfig())
	if err := o.SetDelayCorrection(DelayNesterov, 3); err != nil {
		t.Fatal(err)
	}
	o.Step(1e-3)
	if n := testing.AllocsPerRun(10, func() { o.Step(1e-3) }); n != 0 {
		t.Errorf("Step with the look-ahead allocates %v times", n)
	}
}

// A noisy regression: least squares on 256 samples of 16 features, one
// 32-sample minibatch a step (seeded), gradients delayed by 3 steps. The
// look-ahead ends at a lower full-data loss than plain delayed AdamW.
func TestOptimDelayNesterovRegression(t *testing.T) {
	const N, F, B, tau, steps = 256, 16, 32, 3, 600 // tau is the delay
	rng := rand.New(rand.NewPCG(5, 6))
	X := make([]float64, N*F)
	y := make([]float64, N)
	for i := range N {
		var dot float64
		for j := range F {
			X[i*F+j] = rng.NormFloat64() * math.Pow(2, float64(j%4)) // uneven feature scales
			dot += X[i*F+j] * math.Cos(float64(j))
		}
		y[i] = dot + 0.1*rng.NormFloat64()
	}
	loss := func(w []float32) float64 {
		var s float64
		for i := range N {
			r := -y[i]
			for j := range F {
				r += X[i*F+j] * float64(w[j])
			}
			s += r * r
		}
		return s / (2 * N)
	}
	run := func(corr DelayCorrection, tau int, lr float32) float64 {
		p := &Param{Name: "w", Shape: []int{F}, Data: make([]float32, F), Grad: make([]float32, F)}
		cfg := DefaultAdamWConfig()
		cfg.WeightDecay = 0
		o, _ := NewAdamW([]*Param{p}, cfg)
		if err := o.SetDelayCorrection(corr, float64(tau)); err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(7, 8)) // same minibatches for both
		hist := [][]float32{append([]float32(nil), p.Data...)}
		var tail float64
		for s := range steps {
			x := hist[max(0, s-tau)]
			clear(p.Grad)
			for range B {
				i := r.IntN(N)
				res := -y[i]
				for j := range F {
					res += X[i*F+j] * float64(x[j])
				}
				for j := range F {
					p.Grad[j] += float32(res * X[i*F+j] / B)
				}
			}
			o.Step(lr)
			hist = append(hist, append([]float32(nil), p.Data...))
			if s >= 3*steps/4 {
				tail += loss(o.Master()[0].Data) / (steps / 4)
			}
		}
		return tail
	}
	for _, lr := range []float32{0.03, 0.1} {
		plain, nest, sync := run(DelayNone, tau, lr), run(DelayNesterov, tau, lr), run(DelayNone, 0, lr)
		t.Logf("lr %g: final-quarter full loss: no delay %.4g, delayed AdamW %.4g, delayed + nesterov %.4g", lr, sync, plain, nest)
		if nest >= plain {
			t.Errorf("lr %g: look-ahead loss %.4g, not below delayed AdamW's %.4g", lr, nest, plain)
		}
	}
}

// nadamRef64 is torch.optim.NAdam(decoupled_weight_decay=True)'s update
// written out in float64 (torch/optim/nadam.py, _single_tensor_nadam).
func nadamRef64(w, g, m, v []float64, t int, muProd *float64, lr, b1, b2, eps, wd, psi float64, decay bool) {
	mu := b1 * (1 - 0.5*math.Pow(0.96, float64(t)*psi))
	mu1 := b1 * (1 - 0.5*math.Pow(0.96, float64(t+1)*psi))
	*muProd *= mu
	for i := range w {
		if decay {
			w[i] *= 1 - lr*wd
		}
		m[i] = b1*m[i] + (1-b1)*g[i]
		v[i] = b2*v[i] + (1-b2)*g[i]*g[i]
		denom := math.Sqrt(v[i]/(1-math.Pow(b2, float64(t)))) + eps
		w[i] -= lr * (1 - mu) / (1 - *muProd) * g[i] / denom
		w[i] -= lr * mu1 / (1 - *muProd*mu1) * m[i] / denom
	}
}

func TestOptimNAdamWMatchesPyTorchFormula(t *testing.T) {
	cfg := DefaultAdamWConfig()
	cfg.Beta1, cfg.Nesterov, cfg.MomentumDecay = 0.99, true, 0.004 // the Pluralis code's setting
	n := 1000
	p := &Param{Name: "a", Shape: []int{n}, Data: make([]float32, n), Grad: make([]float32, n), Decay: true}
	w := make([]float64, n)
	for i := range p.Data {
		p.Data[i] = float32(math.Sin(float64(i)))
		w[i] = float64(p.Data[i])
	}
	g, m, v := make([]float64, n), make([]float64, n), make([]float64, n)
	o, err := NewAdamW([]*Param{p}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	muProd, lr := 1.0, 1e-2
	for step := 1; step <= 8; step++ {
		for i := range p.Grad {
			p.Grad[i] = float32(math.Cos(float64(i*step))) * 0.1
			g[i] = float64(p.Grad[i])
		}
		nadamRef64(w, g, m, v, step, &muProd, lr, float64(cfg.Beta1), float64(cfg.Beta2), float64(cfg.Eps), float64(cfg.WeightDecay), float64(cfg.MomentumDecay), true)
		o.Step(float32(lr))
	}
	for i, x := range p.Data {
		if d := math.Abs(float64(x) - w[i]); d > 1e-5 {
			t.Fatalf("[%d] = %v after 8 steps, float64 NAdamW gives %v", i, x, w[i])
		}
	}
	// Resuming recomputes Πμ from the step count.
	step, ts := o.State()
	q := &Param{Name: "a", Shape: []int{n}, Data: append([]float32(nil), p.Data...), Grad: append([]float32(nil), p.Grad...), Decay: true}
	o2, _ := NewAdamW([]*Param{q}, cfg)
	if err := o2.LoadState(step, ts); err != nil {
		t.Fatal(err)
	}
	o.Step(float32(lr))
	o2.Step(float32(lr))
	for i := range p.Data {
		if p.Data[i] != q.Data[i] {
			t.Fatalf("resumed NAdamW diverges at %d: %v vs %v", i, q.Data[i], p.Data[i])
		}
	}
	cfg.MomentumDecay = 0
	if _, err := NewAdamW([]*Param{p}, cfg); err == nil {
		t.Error("nesterov with momentum_decay 0 accepted")
	}
}
