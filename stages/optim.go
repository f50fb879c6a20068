package stages

import (
	"errors"
	"fmt"
	"math"
)

// AdamWConfig holds AdamW's hyperparameters (the learning rate is given to
// each Step so a schedule can change it).
type AdamWConfig struct {
	Beta1       float32 `toml:"beta1"`
	Beta2       float32 `toml:"beta2"`
	Eps         float32 `toml:"eps"`
	WeightDecay float32 `toml:"weight_decay"`
}

// DefaultAdamWConfig is nanoGPT's: betas (0.9, 0.95), eps 1e-8, weight
// decay 0.1.
func DefaultAdamWConfig() AdamWConfig {
	return AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
}

// Validate names the bad field and value.
func (c AdamWConfig) Validate() error {
	var errs []error
	if !(c.Beta1 >= 0 && c.Beta1 < 1) {
		errs = append(errs, fmt.Errorf("optim.beta1 = %g: must be in [0, 1)", c.Beta1))
	}
	if !(c.Beta2 >= 0 && c.Beta2 < 1) {
		errs = append(errs, fmt.Errorf("optim.beta2 = %g: must be in [0, 1)", c.Beta2))
	}
	if !(c.Eps > 0) {
		errs = append(errs, fmt.Errorf("optim.eps = %g: must be > 0", c.Eps))
	}
	if !(c.WeightDecay >= 0) {
		errs = append(errs, fmt.Errorf("optim.weight_decay = %g: must be ≥ 0", c.WeightDecay))
	}
	return errors.Join(errs...)
}

// AdamW is PyTorch's torch.optim.AdamW: decoupled weight decay (only on
// params with Decay), bias-corrected moments. Its state is one flat m and
// one flat v array over the params it was given, allocated once.
type AdamW struct {
	cfg    AdamWConfig
	params []*Param
	offs   []int // offset of each param in m and v
	m, v   []float32
	step   int
	job    adamJob
	par    parState
}

// NewAdamW makes an optimizer for params (typically a Stage's Params()).
func NewAdamW(params []*Param, cfg AdamWConfig) (*AdamW, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new adamw: %w", err)
	}
	o := &AdamW{cfg: cfg, params: params}
	n := 0
	for _, p := range params {
		o.offs = append(o.offs, n)
		n += len(p.Data)
	}
	o.offs = append(o.offs, n)
	o.m = make([]float32, n)
	o.v = make([]float32, n)
	return o, nil
}

// Step applies one update with learning rate lr using the params' Grad.
func (o *AdamW) Step(lr float32) {
	o.step++
	t := float64(o.step)
	o.job = adamJob{o: o, lr: lr,
		bc1: float32(1 - math.Pow(float64(o.cfg.Beta1), t)),
		bc2: float32(math.Sqrt(1 - math.Pow(float64(o.cfg.Beta2), t)))}
	parallelFor(&o.par, o.offs[len(o.offs)-1], 1<<14, &o.job)
}

type adamJob struct {
	o        *AdamW
	lr       float32
	bc1, bc2 float32 // 1−β1ᵗ and √(1−β2ᵗ)
}

// run updates flat indices [lo, hi), which may cut across params.
func (j *adamJob) run(_, lo, hi int) {
	o := j.o
	b1, b2, eps := o.cfg.Beta1, o.cfg.Beta2, o.cfg.Eps
	step := j.lr / j.bc1
	for i, p := range o.params {
		a, b := max(lo, o.offs[i]), min(hi, o.offs[i+1])
		if a >= b {
			continue
		}
		w := p.Data[a-o.offs[i] : b-o.offs[i]]
		g := p.Grad[a-o.offs[i] : b-o.offs[i]]
		m, v := o.m[a:b], o.v[a:b]
		decay := float32(1)
		if p.Decay {
			decay = 1 - j.lr*o.cfg.WeightDecay
		}
		// The vector update does the same operations in the same order;
		// the loop finishes the tail (and is the reference).
		k0 := adamVec(w, g, m, v, b1, b2, j.bc2, eps, decay, step)
		w, g, m, v = w[k0:], g[k0:], m[k0:], v[k0:]
		for k := range w {
			gk := g[k]
			m[k] = b1*m[k] + (1-b1)*gk
			v[k] = b2*v[k] + (1-b2)*gk*gk
			denom := float32(math.Sqrt(float64(v[k])))/j.bc2 + eps
			w[k] = w[k]*decay - step*m[k]/denom
		}
	}
}

// StepCount is the number of Steps taken (PyTorch's state "step").
func (o *AdamW) StepCount() int { return o.step }

// Config returns the hyperparameters.
func (o *AdamW) Config() AdamWConfig { return o.cfg }

// State exports the optimizer state for a checkpoint: the step count and
// tensors "optim.m.<param name>" and "optim.v.<param name>" (views of the
// live state: copy or write them out before the next Step).
func (o *AdamW) State() (step int, tensors []Tensor) {
	for i, p := range o.params {
		a, b := o.offs[i], o.offs[i+1]
		tensors = append(tensors,
			Tensor{Name: "optim.m." + p.Name, Shape: p.Shape, Data: o.m[a:b:b]},
			Tensor{Name: "optim.v." + p.Name, Shape: p.Shape, Data: o.v[a:b:b]})
	}
	return o.step, tensors
}

// LoadState restores what State exported. Tensors not named optim.m.* or
// optim.v.* are ignored (a checkpoint file holds the weights too); every
// param's moments must be present with its shape.
func (o *AdamW) LoadState(step int, tensors []Tensor) error {
	if step < 0 {
		return fmt.Errorf("load optimizer state: step %d is negative", step)
	}
	byName := make(map[string]Tensor, len(tensors))
	for _, t := range tensors {
		byName[t.Name] = t
	}
	for i, p := range o.params {
		for _, kind := range []string{"m", "v"} {
			name := "optim." + kind + "." + p.Name
			t, ok := byName[name]
			if !ok {
				return fmt.Errorf("load optimizer state: checkpoint lacks %s: it was saved without optimizer state or for another model split", name)
			}
			if len(t.Data) != len(p.Data) {
				return fmt.Errorf("load optimizer state: %s has %d values (shape %v), param has %d (shape %v)", name, len(t.Data), t.Shape, len(p.Data), p.Shape)
			}
		}
		a, b := o.offs[i], o.offs[i+1]
		copy(o.m[a:b], byName["optim.m."+p.Name].Data)
		copy(o.v[a:b], byName["optim.v."+p.Name].Data)
	}
	o.step = step
	return nil
}

// GradSumSquares is Σ grad² over params, in float64 and in order
// (deterministic). The global gradient norm of a split model is
// sqrt(Σ over stages of Stage.GradSumSquares()).
func GradSumSquares(params []*Param) float64 {
	var s float64
	for _, p := range params {
		for _, g := range p.Grad {
			s += float64(g) * float64(g)
		}
	}
	return s
}

// GradSumSquares is this stage's share of the global squared gradient norm.
// It leaves out the LM-head copy of the tied embedding on a last stage that
// is not first: after the runtime sums the tied gradients, the first stage
// counts that matrix once, as the whole model would. An untied LM head is
// a parameter of its own and counts.
func (s *Stage) GradSumSquares() float64 {
	var sum float64
	for _, p := range s.params {
		if p.Name == lmHeadName && s.cfg.Tied() {
			continue
		}
		sum += GradSumSquares([]*Param{p})
	}
	return sum
}

// ClipScale is the factor to multiply gradients by so their global norm
// sqrt(sumSquares) is at most maxNorm (PyTorch's clip_grad_norm_: 1 when
// already below, maxNorm/(norm+1e-6) otherwise). maxNorm ≤ 0 means no
// clipping.
func ClipScale(sumSquares, maxNorm float64) float32 {
	norm := math.Sqrt(sumSquares)
	if maxNorm <= 0 || norm <= maxNorm {
		return 1
	}
	return float32(maxNorm / (norm + 1e-6))
}

// ScaleGrads multiplies every gradient by scale.
func ScaleGrads(params []*Param, scale float32) {
	if scale == 1 {
		return
	}
	for _, p := range params {
		for i := range p.Grad {
			p.Grad[i] *= scale
		}
	}
}
