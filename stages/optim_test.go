package stages

import (
	"math"
	"testing"
)

// adamRef64 is torch.optim.AdamW's update written out in float64.
func adamRef64(w, g []float64, m, v []float64, t int, lr, b1, b2, eps, wd float64, decay bool) {
	for i := range w {
		if decay {
			w[i] *= 1 - lr*wd
		}
		m[i] = b1*m[i] + (1-b1)*g[i]
		v[i] = b2*v[i] + (1-b2)*g[i]*g[i]
		bc1 := 1 - math.Pow(b1, float64(t))
		bc2 := 1 - math.Pow(b2, float64(t))
		w[i] -= lr / bc1 * m[i] / (math.Sqrt(v[i])/math.Sqrt(bc2) + eps)
	}
}

func TestAdamWMatchesPyTorchFormula(t *testing.T) {
	cfg := DefaultAdamWConfig()
	n := 40000 // several pool chunks, cutting across params
	pa := &Param{Name: "a", Shape: []int{n}, Data: make([]float32, n), Grad: make([]float32, n), Decay: true}
	pb := &Param{Name: "b", Shape: []int{7}, Data: make([]float32, 7), Grad: make([]float32, 7)}
	params := []*Param{pa, pb}
	ref := map[string][4][]float64{}
	for _, p := range params {
		for i := range p.Data {
			p.Data[i] = float32(math.Sin(float64(i)))
		}
		w := make([]float64, len(p.Data))
		for i, x := range p.Data {
			w[i] = float64(x)
		}
		ref[p.Name] = [4][]float64{w, make([]float64, len(w)), make([]float64, len(w)), make([]float64, len(w))}
	}
	o, err := NewAdamW(params, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lr := 1e-2
	for step := 1; step <= 5; step++ {
		for _, p := range params {
			r := ref[p.Name]
			for i := range p.Grad {
				p.Grad[i] = float32(math.Cos(float64(i*step))) * 0.1
				r[1][i] = float64(p.Grad[i])
			}
			adamRef64(r[0], r[1], r[2], r[3], step, lr, float64(cfg.Beta1), float64(cfg.Beta2), float64(cfg.Eps), float64(cfg.WeightDecay), p.Decay)
		}
		o.Step(float32(lr))
	}
	for _, p := range params {
		for i, x := range p.Data {
			if d := math.Abs(float64(x) - ref[p.Name][0][i]); d > 1e-5 {
				t.Fatalf("%s[%d] = %v after 5 steps, float64 AdamW gives %v", p.Name, i, x, ref[p.Name][0][i])
			}
		}
	}
	// Decay only where Decay is set: with zero gradients a decayed weight
	// shrinks by exactly (1 − lr·wd), an undecayed one keeps its value.
	o2, _ := NewAdamW(params, cfg)
	clear(pa.Grad)
	clear(pb.Grad)
	a0, b0 := pa.Data[1], pb.Data[1]
	o2.Step(float32(lr))
	if want := a0 * (1 - float32(lr)*cfg.WeightDecay); pa.Data[1] != want {
		t.Errorf("decayed weight %v, want %v", pa.Data[1], want)
	}
	if pb.Data[1] != b0 {
		t.Errorf("undecayed weight changed from %v to %v with zero gradient", b0, pb.Data[1])
	}
}

func TestAdamWStateRoundTrip(t *testing.T) {
	mk := func() []*Param {
		return []*Param{{Name: "w", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}, Grad: []float32{.1, -.2, .3, -.4, .5, -.6}, Decay: true}}
	}
	pa, pb := mk(), mk()
	a, _ := NewAdamW(pa, DefaultAdamWConfig())
	b, _ := NewAdamW(pb, DefaultAdamWConfig())
	a.Step(0.1)
	a.Step(0.1)
	step, ts := a.State()
	copy(pb[0].Data, pa[0].Data)
	if err := b.LoadState(step, ts); err != nil {
		t.Fatal(err)
	}
	a.Step(0.1)
	b.Step(0.1)
	for i := range pa[0].Data {
		if pa[0].Data[i] != pb[0].Data[i] {
			t.Fatalf("resumed optimizer diverges at %d: %v vs %v", i, pb[0].Data[i], pa[0].Data[i])
		}
	}
	if err := b.LoadState(1, ts[:1]); err == nil {
		t.Error("state without optim.v accepted")
	}
	if _, err := NewAdamW(pa, AdamWConfig{Beta1: 1, Beta2: 0.9, Eps: 1e-8}); err == nil {
		t.Error("beta1 = 1 accepted")
	}
}

func TestClipping(t *testing.T) {
	p := []*Param{{Name: "x", Grad: []float32{3, 4}, Data: make([]float32, 2)}}
	ss := GradSumSquares(p)
	if ss != 25 {
		t.Fatalf("sum of squares %v, want 25", ss)
	}
	if s := ClipScale(ss, 10); s != 1 {
		t.Errorf("norm 5 under max 10 scaled by %v", s)
	}
	s := ClipScale(ss, 1)
	ScaleGrads(p, s)
	if n := math.Sqrt(GradSumSquares(p)); math.Abs(n-1) > 1e-5 {
		t.Errorf("clipped norm %v, want 1", n)
	}
	// A split model's per-stage sums add up to the whole model's norm.
	cfg := tinyConfig(true)
	whole, _ := NewStage(cfg, 0, 3, true, true, 1, 1)
	first, _ := NewStage(cfg, 0, 2, true, false, 1, 1)
	last, _ := NewStage(cfg, 2, 3, false, true, 1, 1)
	for _, s := range []*Stage{whole, first, last} {
		for _, p := range s.Params() {
			for i := range p.Grad {
				p.Grad[i] = float32(len(p.Name)+i%3) * 0.01
			}
		}
	}
	got, want := first.GradSumSquares()+last.GradSumSquares(), whole.GradSumSquares()
	if math.Abs(got-want) > 1e-9*want {
		t.Errorf("split grad sum of squares %v, whole model %v", got, want)
	}
}
