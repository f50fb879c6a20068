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

	// Nesterov makes the update NAdamW: Dozat's Nesterov momentum in Adam,
	// torch.optim.NAdam with decoupled_weight_decay=True. It is what the
	// public code of the Pluralis asynchronous-pipeline paper trains with
	// (at Beta1 = 0.99), so a run can compare it with the weight look-ahead
	// (SetDelayCorrection). Off (the zero value) is AdamW, unchanged.
	Nesterov bool `toml:"nesterov"`
	// MomentumDecay is NAdam's ψ (torch's momentum_decay, default 0.004):
	// the momentum used for the look-ahead warms up as
	// β1·(1 − ½·0.96^(t·ψ)). Only read when Nesterov is set.
	MomentumDecay float32 `toml:"momentum_decay"`
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
	if c.Nesterov && !(c.MomentumDecay > 0) {
		errs = append(errs, fmt.Errorf("optim.momentum_decay = %g: must be > 0 with nesterov (PyTorch's NAdam uses 0.004)", c.MomentumDecay))
	}
	return errors.Join(errs...)
}

// AdamW is PyTorch's torch.optim.AdamW: decoupled weight decay (only on
// params with Decay), bias-corrected moments (NAdamW with
// AdamWConfig.Nesterov). Its state is one flat m and
// one flat v array over the params it was given, allocated once.
type AdamW struct {
	cfg    AdamWConfig
	params []*Param
	offs   []int // offset of each param in m and v
	m, v   []float32
	step   int
	job    adamJob
	par    parState

	// Delay correction (SetDelayCorrection). With DelayNesterov the iterate
	// lives in master and the params' Data hold its look-ahead.
	corr   DelayCorrection
	delay  float64
	master []float32

	muProd float64 // NAdam: Π μ_i over the steps taken
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
	o.muProd = 1
	return o, nil
}

// nadamMu is NAdam's momentum schedule μ_t = β1·(1 − ½·0.96^(t·ψ)).
func (o *AdamW) nadamMu(t float64) float64 {
	return float64(o.cfg.Beta1) * (1 - 0.5*math.Pow(0.96, t*float64(o.cfg.MomentumDecay)))
}

// Step applies one update with learning rate lr using the params' Grad.
func (o *AdamW) Step(lr float32) {
	o.step++
	t := float64(o.step)
	o.job = adamJob{o: o, lr: lr,
		bc1: float32(1 - math.Pow(float64(o.cfg.Beta1), t)),
		bc2: float32(math.Sqrt(1 - math.Pow(float64(o.cfg.Beta2), t)))}
	if o.cfg.Nesterov {
		// torch.optim.NAdam's scalars: the gradient's weight (1−μ_t) and
		// the momentum's μ_{t+1}, each over its own bias correction.
		mu, mu1 := o.nadamMu(t), o.nadamMu(t+1)
		o.muProd *= mu
		o.job.cg = float32(float64(lr) * (1 - mu) / (1 - o.muProd))
		o.job.cm = float32(float64(lr) * mu1 / (1 - o.muProd*mu1))
	}
	parallelFor(&o.par, o.offs[len(o.offs)-1], 1<<14, &o.job)
}

type adamJob struct {
	o        *AdamW
	lr       float32
	bc1, bc2 float32 // 1−β1ᵗ and √(1−β2ᵗ)
	cg, cm   float32 // NAdam: lr·(1−μ_t)/(1−Πμ) and lr·μ_{t+1}/(1−Πμ·μ_{t+1})
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
		if o.master != nil {
			// The iterate is the master copy; Data gets its look-ahead
			// after the update, from the same (updated) m and v.
			w = o.master[a:b]
		}
		g := p.Grad[a-o.offs[i] : b-o.offs[i]]
		m, v := o.m[a:b], o.v[a:b]
		decay := float32(1)
		if p.Decay {
			decay = 1 - j.lr*o.cfg.WeightDecay
		}
		if o.cfg.Nesterov {
			// NAdamW, scalar only: it is for comparison runs, not the hot
			// path.
			for k := range w {
				gk := g[k]
				m[k] = b1*m[k] + (1-b1)*gk
				v[k] = b2*v[k] + (1-b2)*gk*gk
				denom := float32(math.Sqrt(float64(v[k])))/j.bc2 + eps
				w[k] = w[k]*decay - j.cg*gk/denom - j.cm*m[k]/denom
			}
			if o.master != nil {
				o.lookAhead(p, i, a, b, j.lr, step, j.bc2)
			}
			continue
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
		if o.master != nil {
			o.lookAhead(p, i, a, b, j.lr, step, j.bc2)
		}
	}
}

// DelayCorrection says how an optimizer compensates for stale gradients:
// in the async pipeline schedule (scheduler.Async) the gradient a stage
// applies at step t was computed on the weights of step t-τ.
type DelayCorrection int

const (
	// DelayNone applies the stale gradient as it is: plain delayed AdamW,
	// the baseline. It is the zero value (against the house habit of an
	// invalid zero) because an AdamW that never heard of delays must keep
	// behaving exactly as before.
	DelayNone DelayCorrection = iota
	// DelayNesterov runs the forwards (and, by weight stashing, their
	// backwards) on a look-ahead of the weights: the AdamW iterate
	// extrapolated τ steps along its current momentum, so the gradient
	// that arrives τ steps later was computed near the point it is applied
	// to. See SetDelayCorrection.
	DelayNesterov
)

func (d DelayCorrection) String() string {
	switch d {
	case DelayNone:
		return "none"
	case DelayNesterov:
		return "nesterov"
	}
	return fmt.Sprintf("DelayCorrection(%d)", int(d))
}

// ParseDelayCorrection accepts "none" and "nesterov" (the names String
// returns; train.delay_correction in a config).
func ParseDelayCorrection(s string) (DelayCorrection, error) {
	switch s {
	case "none", "":
		return DelayNone, nil
	case "nesterov":
		return DelayNesterov, nil
	}
	return DelayNone, fmt.Errorf(`delay correction %q: want "none" or "nesterov"`, s)
}

// MarshalText writes the name ParseDelayCorrection accepts.
func (d DelayCorrection) MarshalText() ([]byte, error) {
	if d != DelayNone && d != DelayNesterov {
		return nil, fmt.Errorf("marshal %v: unknown delay correction", d)
	}
	return []byte(d.String()), nil
}

// UnmarshalText parses the names ParseDelayCorrection accepts
// (train.delay_correction).
func (d *DelayCorrection) UnmarshalText(b []byte) error {
	v, err := ParseDelayCorrection(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// SetDelayCorrection turns the correction for gradients delayed by delay
// optimizer steps on (DelayNesterov) or off (DelayNone). delay need not be
// whole: the async schedule's mean staleness on a stage is
// scheduler.AsyncMachine.Delay() = (w+λ)/M.
//
// DelayNesterov keeps the AdamW iterate w in a master copy inside the
// optimizer (one more copy of the params) and, after each Step, sets the
// params' Data to its look-ahead
//
//	ŵ = w + τ·u,  u = −lr·m̂/(√v̂+ε) − lr·λ·w  (λ = weight decay, where Decay)
//
// u is the step AdamW would take next from its current moments without a
// new gradient, so ŵ is where the iterate will be when the gradient of a
// forward run on ŵ now comes back, τ steps later. This is Nesterov's
// look-ahead (gradient at w + γ·d rather than at w) stretched over the
// delay: with τ = 1 and SGD with momentum it is NAG. It is the method the
// brief names as the fallback, not a transcription of the paper: the text
// of "Nesterov Method for Asynchronous Pipeline Parallel Optimization"
// (Ajanthan et al., ICML 2025, arXiv:2505.01099) was not reachable here;
// its abstract says it "modif[ies] the look-ahead step in NAG to address
// the staleness", and its public code (github.com/PluralisResearch/AsyncPP,
// seen as the fork sukrucildirr/AsyncPP: run.bash, main_with_runtime.py)
// trains with weight stashing and torch NAdam with decoupled weight decay
// at β1 = 0.99, optionally raising β1 with the stage's delay — a
// Nesterov-form update, not this weight extrapolation; it is available as
// AdamWConfig.Nesterov, and the two compose. docs/async.md compares them.
//
// With delay 0 the look-ahead is the iterate and the result is plain
// AdamW bit for bit (TestOptimDelayNesterovZeroIsAdamW). The runtime forwards and
// backwards on Data as always; it must checkpoint and evaluate the
// iterate, which State exports as optim.w.<name> (Master gives views).
func (o *AdamW) SetDelayCorrection(c DelayCorrection, delay float64) error {
	if !(delay >= 0) || math.IsInf(delay, 0) {
		return fmt.Errorf("adamw: delay = %v steps, want finite ≥ 0", delay)
	}
	switch c {
	case DelayNone:
		if o.master != nil {
			// Data becomes the iterate again.
			for i, p := range o.params {
				copy(p.Data, o.master[o.offs[i]:o.offs[i+1]])
			}
			o.master = nil
		}
	case DelayNesterov:
		if o.master == nil {
			o.master = make([]float32, o.offs[len(o.offs)-1])
			for i, p := range o.params {
				copy(o.master[o.offs[i]:o.offs[i+1]], p.Data)
			}
		}
	default:
		return fmt.Errorf("adamw: delay correction %v: want DelayNone or DelayNesterov", c)
	}
	o.corr, o.delay = c, delay
	return nil
}

// DelayCorrection returns the correction and the delay it corrects for.
func (o *AdamW) DelayCorrection() (DelayCorrection, float64) { return o.corr, o.delay }

// Master returns the AdamW iterate of each param, in Params order: views of
// the master copy under DelayNesterov, of the params' Data otherwise. It is
// what to checkpoint and evaluate; Data is what to forward with.
func (o *AdamW) Master() []Tensor {
	var out []Tensor
	for i, p := range o.params {
		d := p.Data
		if o.master != nil {
			a, b := o.offs[i], o.offs[i+1]
			d = o.master[a:b:b]
		}
		out = append(out, Tensor{Name: p.Name, Shape: p.Shape, Data: d})
	}
	return out
}

// lookAhead sets p.Data[a-off : b-off] to the master's look-ahead by the
// delay (see SetDelayCorrection). It reads m and v after this step's
// update, so u is the step the next update would take with no new
// gradient. delay 0 copies, so the params equal plain AdamW's bit for bit.
func (o *AdamW) lookAhead(p *Param, i, a, b int, lr, step, bc2 float32) {
	w, x := o.master[a:b], p.Data[a-o.offs[i]:b-o.offs[i]]
	if o.delay == 0 {
		copy(x, w)
		return
	}
	tau := float32(o.delay)
	wd := float32(0)
	if p.Decay {
		wd = lr * o.cfg.WeightDecay
	}
	m, v, eps := o.m[a:b], o.v[a:b], o.cfg.Eps
	for k := range w {
		denom := float32(math.Sqrt(float64(v[k])))/bc2 + eps
		u := -step*m[k]/denom - wd*w[k]
		x[k] = w[k] + tau*u
	}
}

// StepCount is the number of Steps taken (PyTorch's state "step").
func (o *AdamW) StepCount() int { return o.step }

// Config returns the hyperparameters.
func (o *AdamW) Config() AdamWConfig { return o.cfg }

// State exports the optimizer state for a checkpoint: the step count and
// tensors "optim.m.<param name>" and "optim.v.<param name>" (views of the
// live state: copy or write them out before the next Step), and under
// DelayNesterov the iterate as "optim.w.<param name>".
func (o *AdamW) State() (step int, tensors []Tensor) {
	for i, p := range o.params {
		a, b := o.offs[i], o.offs[i+1]
		tensors = append(tensors,
			Tensor{Name: "optim.m." + p.Name, Shape: p.Shape, Data: o.m[a:b:b]},
			Tensor{Name: "optim.v." + p.Name, Shape: p.Shape, Data: o.v[a:b:b]})
		if o.master != nil {
			tensors = append(tensors, Tensor{Name: "optim.w." + p.Name, Shape: p.Shape, Data: o.master[a:b:b]})
		}
	}
	return o.step, tensors
}

// LoadState restores what State exported. Tensors not named optim.m.*,
// optim.v.* or optim.w.* are ignored (a checkpoint file holds the weights
// too); every param's moments must be present with its shape. Under
// DelayNesterov call SetDelayCorrection first, so the iterate is restored.
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
		if o.master != nil {
			// The iterate, if the checkpoint has it (saved under
			// DelayNesterov); otherwise the params' Data were the iterate.
			// Data keeps its value until the next Step's look-ahead.
			src := p.Data
			if t, ok := byName["optim.w."+p.Name]; ok && len(t.Data) == len(p.Data) {
				src = t.Data
			}
			copy(o.master[a:b], src)
		}
	}
	o.step = step
	// NAdam's Πμ is a function of the step count, so it needs no tensor.
	o.muProd = 1
	for t := 1; o.cfg.Nesterov && t <= step; t++ {
		o.muProd *= o.nadamMu(float64(t))
	}
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
