package stages

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/narrowband/narrowband/scheduler"
)

// A reference async runtime in one goroutine: a real GPT split into
// stages, driven by scheduler.AsyncMachine exactly as docs/async.md tells
// the runtime to (weight stashing by swapping the params' Data, one
// gradient buffer per pending step, the tied-embedding exchange, AdamW with
// or without the delay correction), with messages delivered in an order
// chosen by a seeded generator. It is the contract the runtime worker has
// to meet, run end to end on real math.
type asyncRef struct {
	t      *testing.T
	S, M   int
	B, T   int
	steps  int
	stages []*asyncRefStage
	queue  []asyncMsg
	losses []float64 // per step, mean over micro-batches (last stage)

	stashes, stashedBackwards int
}

type asyncRefStage struct {
	st    *Stage
	m     *scheduler.AsyncMachine
	opt   *AdamW
	live  [][]float32         // each param's own Data buffer
	stash map[int][][]float32 // version → copy of every param
	grads [][][]float32       // [step % GradBuffers][param]
	acts  map[int][]float32   // stream index → received activation
	dins  map[int][]float32   // stream index → received gradient
	emb   map[int][]float32   // step → the peer's tied-embedding gradient
}

type asyncMsg struct {
	msg     scheduler.Message
	payload []float32
}

// asyncTokens is micro-batch g's input and targets: runs of +1 mod V from
// a seeded start, which a small model learns.
func asyncTokens(g, B, T, V int) (tok, tgt []int32) {
	r := rand.New(rand.NewPCG(uint64(g), 99))
	tok, tgt = make([]int32, B*T), make([]int32, B*T)
	for b := range B {
		x := r.IntN(V)
		for i := range T {
			tok[b*T+i] = int32(x)
			x = (x + 1) % V
			tgt[b*T+i] = int32(x)
		}
	}
	return tok, tgt
}

func newAsyncRef(t *testing.T, S, M, D, steps int, corr DelayCorrection) *asyncRef {
	t.Helper()
	cfg := tinyConfig(true)
	r := &asyncRef{t: t, S: S, M: M, B: 2, T: cfg.BlockSize, steps: steps, losses: make([]float64, steps)}
	p := scheduler.Pipeline{Schedule: scheduler.Async, Stages: S, Micro: M, InFlight: D}
	per := cfg.NLayer / S
	for i := range S {
		m, err := scheduler.NewAsyncMachine(p, i, steps)
		if err != nil {
			t.Fatal(err)
		}
		hi := (i + 1) * per
		if i == S-1 {
			hi = cfg.NLayer
		}
		st, err := NewStage(cfg, i*per, hi, i == 0, i == S-1, r.B, m.MaxInFlight())
		if err != nil {
			t.Fatal(err)
		}
		st.Init(1)
		opt, err := NewAdamW(st.Params(), DefaultAdamWConfig())
		if err != nil {
			t.Fatal(err)
		}
		if err := opt.SetDelayCorrection(corr, m.Delay()); err != nil {
			t.Fatal(err)
		}
		s := &asyncRefStage{st: st, m: m, opt: opt, stash: map[int][][]float32{},
			acts: map[int][]float32{}, dins: map[int][]float32{}, emb: map[int][]float32{}}
		for _, p := range st.Params() {
			s.live = append(s.live, p.Data)
		}
		for range m.GradBuffers() {
			var g [][]float32
			for _, p := range st.Params() {
				g = append(g, make([]float32, len(p.Grad)))
			}
			s.grads = append(s.grads, g)
		}
		r.stages = append(r.stages, s)
	}
	return r
}

func (r *asyncRef) run(rng *rand.Rand) {
	t := r.t
	done := make([]bool, r.S)
	for {
		progress := false
		for i, s := range r.stages {
			for !done[i] {
				a := s.m.Next()
				if a.Kind == scheduler.ActionWait {
					break
				}
				if a.Kind == scheduler.ActionDone {
					done[i] = true
					break
				}
				progress = true
				r.do(i, a)
				if err := s.m.Step(scheduler.Completed(a)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if len(r.queue) > 0 {
			k := 0
			if rng != nil {
				k = rng.IntN(len(r.queue))
			}
			q := r.queue[k]
			r.queue = slices.Delete(r.queue, k, k+1)
			to := r.stages[q.msg.To]
			g := q.msg.Step*r.M + q.msg.Micro
			switch q.msg.Kind {
			case scheduler.MessageActivation:
				to.acts[g] = q.payload
			case scheduler.MessageGradient:
				to.dins[g] = q.payload
			case scheduler.MessageEmbeddingGrad:
				to.emb[q.msg.Step] = q.payload
			}
			if err := to.m.Step(scheduler.Arrived(q.msg)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !progress {
			break
		}
	}
	for i, d := range done {
		if !d {
			t.Fatalf("stage %d stuck at %v", i, r.stages[i].m.Next())
		}
	}
}

// setGrads points every param's Grad at step's buffer.
func (s *asyncRefStage) setGrads(step int) {
	buf := s.grads[step%len(s.grads)]
	for k, p := range s.st.Params() {
		p.Grad = buf[k]
	}
}

func (r *asyncRef) do(i int, a scheduler.Action) {
	t := r.t
	s := r.stages[i]
	ps := s.st.Params()
	g := a.Step*r.M + a.Micro
	send := func(kind scheduler.MessageKind, payload []float32) {
		for _, msg := range s.m.Sends(a) {
			if msg.Kind == kind {
				r.queue = append(r.queue, asyncMsg{msg, append([]float32(nil), payload...)})
			}
		}
	}
	switch a.Kind {
	case scheduler.ActionForward:
		if a.Version != s.m.Version() {
			t.Fatalf("stage %d: forward on v%d, live is v%d", i, a.Version, s.m.Version())
		}
		tok, tgt := asyncTokens(g, r.B, r.T, s.st.Config().VocabSize)
		in := s.acts[g]
		delete(s.acts, g)
		if i == r.S-1 {
			loss, err := s.st.ForwardLoss(a.Slot, r.B, r.T, tok, in, tgt)
			if err != nil {
				t.Fatal(err)
			}
			r.losses[a.Step] += float64(loss) / float64(r.M)
			return
		}
		out, err := s.st.Forward(a.Slot, r.B, r.T, tok, in)
		if err != nil {
			t.Fatal(err)
		}
		send(scheduler.MessageActivation, out)
	case scheduler.ActionBackward:
		// Run on the version the forward used: swap the stashed copy in.
		if a.Version != s.m.Version() {
			w, ok := s.stash[a.Version]
			if !ok {
				t.Fatalf("stage %d: backward needs v%d, not stashed", i, a.Version)
			}
			for k, p := range ps {
				p.Data = w[k]
			}
			r.stashedBackwards++
		}
		s.setGrads(a.Step)
		dout := s.dins[g]
		delete(s.dins, g)
		din, err := s.st.Backward(a.Slot, dout, 1/float32(r.M))
		if err != nil {
			t.Fatal(err)
		}
		for k, p := range ps {
			p.Data = s.live[k]
		}
		send(scheduler.MessageGradient, din)
		if tw := s.st.TiedWeight(); tw != nil {
			send(scheduler.MessageEmbeddingGrad, tw.Grad)
		}
	case scheduler.ActionStash:
		var w [][]float32
		for _, p := range ps {
			w = append(w, append([]float32(nil), p.Data...))
		}
		s.stash[a.Version] = w
		r.stashes++
	case scheduler.ActionDropVersion:
		delete(s.stash, a.Version)
	case scheduler.ActionOptimizerStep:
		s.setGrads(a.Step)
		if tw := s.st.TiedWeight(); tw != nil && r.S > 1 {
			// Own + peer on both ends: the same sum, bit for bit.
			for k, x := range s.emb[a.Step] {
				tw.Grad[k] += x
			}
			delete(s.emb, a.Step)
		}
		s.opt.Step(3e-2)
		for _, p := range ps {
			clear(p.Grad)
		}
	default:
		t.Fatalf("stage %d: unexpected %v", i, a)
	}
}

// The async pipeline over a real GPT: the losses and the final weights are
// the same bit for bit whatever order the messages arrive in (the machine
// orders every update), backwards really run on stashed versions, the two
// copies of the tied embedding stay identical although the last stage
// applies each step later than the first, and the model learns.
func TestOptimAsyncPipelineReference(t *testing.T) {
	const S, M, D, steps = 3, 4, 2, 30
	for _, corr := range []DelayCorrection{DelayNone, DelayNesterov} {
		var ref *asyncRef
		for trial, rng := range []*rand.Rand{nil, rand.New(rand.NewPCG(1, 1)), rand.New(rand.NewPCG(2, 2))} {
			r := newAsyncRef(t, S, M, D, steps, corr)
			r.run(rng)
			if trial == 0 {
				ref = r
				continue
			}
			for k := range r.losses {
				if math.Float64bits(r.losses[k]) != math.Float64bits(ref.losses[k]) {
					t.Fatalf("%v: step %d loss %v with delivery order %d, %v in FIFO order", corr, k, r.losses[k], trial, ref.losses[k])
				}
			}
			for i := range r.stages {
				for k, p := range r.stages[i].st.Params() {
					if !slices.Equal(p.Data, ref.stages[i].st.Params()[k].Data) {
						t.Fatalf("%v: stage %d %s differs between delivery orders", corr, i, p.Name)
					}
				}
			}
		}
		if ref.stashes == 0 || ref.stashedBackwards == 0 {
			t.Fatalf("%v: %d stashes, %d backwards on a stashed version: the test does not exercise stashing", corr, ref.stashes, ref.stashedBackwards)
		}
		// The iterates: under DelayNesterov each end forwards on its own
		// look-ahead (the last stage's delay is longer), but both apply
		// the same updates to the same iterate.
		tied := func(s *asyncRefStage) []float32 {
			for k, p := range s.st.Params() {
				if p == s.st.TiedWeight() {
					return s.opt.Master()[k].Data
				}
			}
			t.Fatal("no tied weight")
			return nil
		}
		if !slices.Equal(tied(ref.stages[0]), tied(ref.stages[S-1])) {
			t.Errorf("%v: the two copies of the tied embedding diverged", corr)
		}
		early := (ref.losses[0] + ref.losses[1]) / 2
		late := (ref.losses[steps-2] + ref.losses[steps-1]) / 2
		t.Logf("%v: loss %.4f → %.4f over %d steps; %d stashes, %d backwards on a stashed version", corr, early, late, steps, ref.stashes, ref.stashedBackwards)
		if !(late < 0.8*early) {
			t.Errorf("%v: loss %.4f → %.4f, want it to fall by 20%%", corr, early, late)
		}
	}
}

// On the same tiny GPT, 100 steps at lr 3e-2 in 3 async stages: staleness
// costs loss, and the look-ahead correction wins most of it back. The
// 1-stage run is the synchronous reference (its async machine has no
// delay).
func TestOptimAsyncCorrectionOnGPT(t *testing.T) {
	const steps = 100
	tail := func(l []float64) float64 {
		var s float64
		for _, x := range l[len(l)-10:] {
			s += x
		}
		return s / 10
	}
	sync := newAsyncRef(t, 1, 4, 1, steps, DelayNone)
	sync.run(nil)
	for _, D := range []int{2, 4} {
		none := newAsyncRef(t, 3, 4, D, steps, DelayNone)
		none.run(nil)
		nest := newAsyncRef(t, 3, 4, D, steps, DelayNesterov)
		nest.run(nil)
		var delays []float64
		for _, s := range none.stages {
			delays = append(delays, s.m.Delay())
		}
		t.Logf("in_flight %d (stage delays %v steps): loss over the last 10 steps: sync %.4f, async %.4f, async + nesterov %.4f",
			D, delays, tail(sync.losses), tail(none.losses), tail(nest.losses))
		if tail(nest.losses) >= tail(none.losses) {
			t.Errorf("in_flight %d: corrected loss %.4f, not below uncorrected %.4f", D, tail(nest.losses), tail(none.losses))
		}
	}
}
