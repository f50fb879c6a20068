//go:build harness

package compression_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/stages"
	"github.com/narrowband/narrowband/stages/kernels"
)

// TestTCHarness trains experiments/compression.toml's model (d=256, 4
// layers cut [1, 3] into 2 stages, GPipe, 4 micro-batches of 4×128 tokens,
// lr 2e-3 with 30 warm-up steps and cosine decay to 2e-4, AdamW β2 0.95,
// weight decay 0.1, clip 1.0) on the Go corpus in one process, with the
// boundary activations and gradients going through a codec's encoder and
// decoder, and reports the real payload bytes per token each way (every
// header, model byte, rotation, id and stream end; the wire frame's fixed
// 30-byte header per message is added on top) and the final held-out loss.
// It mirrors what internal/runtime does for the subspace codec (weights
// that write into the residual stream kept in span(U), tied-embedding
// gradients summed exactly, projected gradients) so the subspace rows
// reproduce docs/results.md's setting; only the transport is skipped.
//
//	TC_VARIANTS=none,sub:48:int4,tc:96:0.3 TC_SEEDS=1337,1338 TC_STEPS=200 \
//	    TC_OUT=/tmp/tc.md go test -tags harness -run TCHarness -v -timeout 0 ./compression/
//
// Variants: none | sub:K:PREC | tc:K:STEP[:g=GRADSTEP][:sent|:off][:nopred][:nopos][:decay=X][:every=N].
func TestTCHarness(t *testing.T) {
	variants := strings.Split(envOr("TC_VARIANTS", "none,sub:48:int4,tc:96:0.3"), ",")
	seeds := strings.Split(envOr("TC_SEEDS", "1337"), ",")
	steps, _ := strconv.Atoi(envOr("TC_STEPS", "200"))
	kernels.SetThreads(2)
	corpus, err := data.Load(context.Background(), data.Options{ValFraction: 0.01, MinBytes: 129})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, seed := range seeds {
		sd, _ := strconv.ParseUint(seed, 10, 64)
		for _, v := range variants {
			t0 := time.Now()
			r, err := harnessRun(corpus, v, sd, steps)
			if err != nil {
				t.Fatalf("%s seed %d: %v", v, sd, err)
			}
			line := fmt.Sprintf("| %s | %d | %d | %.2f / %.2f | %.1f× / %.1f× | %.2f | %.4f | %.4f | %.0f s |",
				v, sd, steps, r.fwdBPT, r.bwdBPT, 1024/r.fwdBPT, 1024/r.bwdBPT, r.fwdNoIDs, r.evalLoss, r.exactLoss, time.Since(t0).Seconds())
			t.Log(line)
			if r.stats != "" {
				t.Log(r.stats)
			}
			lines = append(lines, line)
			if f := os.Getenv("TC_OUT"); f != "" {
				out, _ := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
				fmt.Fprintln(out, line)
				out.Close()
			}
		}
	}
	t.Log("| variant | seed | steps | B/token fwd / bwd | ratio vs fp32 | fwd B/token without ids | held-out loss (through codec) | held-out loss (exact boundary) | time |")
	for _, l := range lines {
		t.Log(l)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

type harnessResult struct {
	fwdBPT, bwdBPT, fwdNoIDs float64
	evalLoss, exactLoss      float64
	stats                    string
}

// link is one variant's boundary: forward h → ĥ, backward g → ĝ.
type link interface {
	forward(dst, h []float32, tok []int32, rows int) (int, error)
	backward(dst, g []float32, tgt []int32, rows int) (int, error)
	// eval sends an eval activation without touching the training state.
	eval(dst, h []float32, tok []int32, rows int) error
	noIDBytes() int
}

const frameHeader = 30 // internal/wire.HeaderSize, per message

type noneLink struct{}

func (noneLink) forward(dst, h []float32, _ []int32, rows int) (int, error) {
	copy(dst, h)
	return 4*len(h) + frameHeader, nil
}
func (noneLink) backward(dst, g []float32, _ []int32, rows int) (int, error) {
	copy(dst, g)
	return 4*len(g) + frameHeader, nil
}
func (noneLink) eval(dst, h []float32, _ []int32, rows int) error { copy(dst, h); return nil }
func (noneLink) noIDBytes() int                                   { return 0 }

type subLink struct {
	s   *compression.Subspace
	d   int
	buf []byte
	tok []int32
}

func (l *subLink) forward(dst, h []float32, tok []int32, rows int) (int, error) {
	var err error
	l.buf, err = l.s.EncodeWithTokens(l.buf[:0], h, tok, rows, l.d)
	if err != nil {
		return 0, err
	}
	l.tok = append(l.tok[:0], tok...)
	return len(l.buf) + frameHeader, l.s.DecodeWithTokens(dst, l.tok, l.buf, rows, l.d)
}
func (l *subLink) backward(dst, g []float32, _ []int32, rows int) (int, error) {
	var err error
	l.buf, err = l.s.Encode(l.buf[:0], g, rows, l.d)
	if err != nil {
		return 0, err
	}
	return len(l.buf) + frameHeader, l.s.Decode(dst, l.buf, rows, l.d)
}
func (l *subLink) eval(dst, h []float32, tok []int32, rows int) error {
	_, err := l.forward(dst, h, tok, rows)
	return err
}
func (l *subLink) noIDBytes() int { return 0 }

type tcLink struct {
	d     int
	fe    *compression.TCEncoder
	fd    *compression.TCDecoder
	be    *compression.TCEncoder
	bd    *compression.TCDecoder
	ee    *compression.TCEncoder
	ed    *compression.TCDecoder
	buf   []byte
	ids   []int32
	noIDs int
	probe *compression.TCEncoder // the forward coder without ids, fed the same rows
}

func (l *tcLink) forward(dst, h []float32, tok []int32, rows int) (int, error) {
	var err error
	l.buf, err = l.fe.Encode(l.buf[:0], h, tok, rows, l.d)
	if err != nil {
		return 0, err
	}
	n := len(l.buf) + frameHeader
	l.ids = resizeIDs(l.ids, rows)
	if err := l.fd.Decode(dst, l.ids, l.buf, rows, l.d); err != nil {
		return 0, err
	}
	for i := range tok {
		if l.ids[i] != tok[i] {
			return 0, fmt.Errorf("row %d: id %d decoded as %d", i, tok[i], l.ids[i])
		}
	}
	// The same rows through a coder that does not send ids: its own state,
	// the same levels and models, to measure what the ids cost.
	p, err := l.probe.Encode(nil, h, tok, rows, l.d)
	if err != nil {
		return 0, err
	}
	l.noIDs += len(p) + frameHeader
	return n, nil
}

func (l *tcLink) backward(dst, g []float32, tgt []int32, rows int) (int, error) {
	var err error
	l.buf, err = l.be.Encode(l.buf[:0], g, tgt, rows, l.d)
	if err != nil {
		return 0, err
	}
	// The receiver (first stage) has the targets: its window is one byte
	// longer than its inputs.
	return len(l.buf) + frameHeader, l.bd.Decode(dst, tgt, l.buf, rows, l.d)
}

func (l *tcLink) eval(dst, h []float32, tok []int32, rows int) error {
	var err error
	l.buf, err = l.ee.Encode(l.buf[:0], h, tok, rows, l.d)
	if err != nil {
		return err
	}
	l.ids = resizeIDs(l.ids, rows)
	return l.ed.Decode(dst, l.ids, l.buf, rows, l.d)
}

// startEval copies the training link's forward state into the eval
// coders, so eval messages use it warm and leave it untouched.
func (l *tcLink) startEval() error {
	if err := l.ee.Restore(l.fe.Snapshot()); err != nil {
		return err
	}
	return l.ed.Restore(l.fd.Snapshot())
}

func (l *tcLink) noIDBytes() int { return l.noIDs }

func resizeIDs(b []int32, n int) []int32 {
	if cap(b) < n {
		return make([]int32, n)
	}
	return b[:n]
}

// constraint keeps the stage-1 writers into the residual stream (and the
// tied embedding copies) in span(U), as internal/runtime/pipeline does.
type constraint struct {
	b          *compression.Basis
	e0         []float32
	rows, cols []*stages.Param
	C          int
}

func newConstraint(sub *compression.Subspace, st *stages.Stage, last bool, C int) *constraint {
	c := &constraint{b: sub.Basis, e0: sub.E0, C: C}
	for _, p := range st.Params() {
		switch {
		case p.Name == "transformer.wte.weight" || p.Name == "lm_head.weight" || p.Name == "transformer.wpe.weight":
			c.rows = append(c.rows, p)
		case !last && (strings.HasSuffix(p.Name, ".attn.c_proj.weight") || strings.HasSuffix(p.Name, ".attn.c_proj.bias") ||
			strings.HasSuffix(p.Name, ".mlp.c_proj.weight") || strings.HasSuffix(p.Name, ".mlp.c_proj.bias")):
			c.cols = append(c.cols, p)
		}
	}
	return c
}

func (c *constraint) weights() {
	for _, p := range c.rows {
		off := p.Name != "transformer.wpe.weight"
		if off {
			for i := range p.Data {
				p.Data[i] -= c.e0[i]
			}
		}
		c.b.ProjectRows(p.Data, len(p.Data)/c.C, c.C)
		if off {
			for i := range p.Data {
				p.Data[i] += c.e0[i]
			}
		}
	}
	for _, p := range c.cols {
		c.b.ProjectCols(p.Data, c.C, len(p.Data)/c.C)
	}
}

func (c *constraint) grads() {
	for _, p := range c.rows {
		c.b.ProjectRows(p.Grad, len(p.Grad)/c.C, c.C)
	}
	for _, p := range c.cols {
		c.b.ProjectCols(p.Grad, c.C, len(p.Grad)/c.C)
	}
}

func parseVariant(v string, d, vocab int, seed uint64) (link, *compression.Subspace, error) {
	f := strings.Split(v, ":")
	switch f[0] {
	case "none":
		return noneLink{}, nil, nil
	case "sub":
		k, _ := strconv.Atoi(f[1])
		p, err := compression.ParsePrecision(f[2])
		if err != nil {
			return nil, nil, err
		}
		s, err := compression.NewSubspace(seed, d, k, vocab, p)
		if err != nil {
			return nil, nil, err
		}
		s.LZ4Tokens = true
		return &subLink{s: s, d: d}, s, nil
	case "tc":
		cfg := compression.DefaultConfig()
		cfg.Method = compression.MethodSubspaceTC
		k, _ := strconv.Atoi(f[1])
		cfg.Rank = compression.Rank(k)
		cfg.Step, _ = strconv.ParseFloat(f[2], 64)
		period := 128 // the position predictor: rows are 4 sequences of 128
		for _, o := range f[3:] {
			switch {
			case o == "sent" || o == "off":
				cfg.Rotation, _ = compression.ParseRotation(o)
			case o == "nopred":
				cfg.PredictorDecay = 0
			case strings.HasPrefix(o, "decay="):
				cfg.PredictorDecay, _ = strconv.ParseFloat(o[6:], 64)
			case strings.HasPrefix(o, "g="):
				cfg.GradStep, _ = strconv.ParseFloat(o[2:], 64)
			case o == "nopos":
				period = 0
			case strings.HasPrefix(o, "every="):
				cfg.RotationInterval, _ = strconv.Atoi(o[6:])
			default:
				return nil, nil, fmt.Errorf("variant %s: option %q", v, o)
			}
		}
		if err := cfg.Validate(); err != nil {
			return nil, nil, err
		}
		sub, err := compression.NewSubspace(seed, d, k, vocab, compression.FP32)
		if err != nil {
			return nil, nil, err
		}
		l := &tcLink{d: d}
		mk := func(dir compression.Direction, ids bool) (*compression.TCEncoder, *compression.TCDecoder) {
			o := compression.TCOptionsFrom(cfg, dir, seed, ids, period)
			e, err1 := compression.NewTCEncoder(sub, dir, o)
			dd, err2 := compression.NewTCDecoder(sub, dir, o)
			if err1 != nil || err2 != nil {
				panic(fmt.Sprint(err1, err2))
			}
			return e, dd
		}
		l.fe, l.fd = mk(compression.DirForward, true)
		l.be, l.bd = mk(compression.DirBackward, false)
		l.ee, l.ed = mk(compression.DirForward, true)
		l.probe, _ = mk(compression.DirForward, false)
		return l, sub, nil
	}
	return nil, nil, fmt.Errorf("unknown variant %q", v)
}

func learningRate(step, warmup, total int, lr, minLR float64) float64 {
	if step < warmup {
		return lr * float64(step+1) / float64(warmup+1)
	}
	ratio := min(1, float64(step-warmup)/float64(total-warmup))
	return minLR + 0.5*(1+math.Cos(math.Pi*ratio))*(lr-minLR)
}

func harnessRun(corpus *data.Corpus, variant string, seed uint64, steps int) (harnessResult, error) {
	cfg := stages.DefaultConfig()
	cfg.NLayer, cfg.NHead, cfg.NEmbd, cfg.BlockSize = 4, 4, 256, 128
	const M, B, T, split = 4, 4, 128, 1
	C, N := cfg.NEmbd, B*T
	s1, err := stages.NewStage(cfg, 0, split, true, false, B, M+1)
	if err != nil {
		return harnessResult{}, err
	}
	s2, err := stages.NewStage(cfg, split, cfg.NLayer, false, true, B, M+1)
	if err != nil {
		return harnessResult{}, err
	}
	s1.Init(seed)
	s2.Init(seed)
	lk, sub, err := parseVariant(variant, C, cfg.VocabSize, seed)
	if err != nil {
		return harnessResult{}, err
	}
	var cons []*constraint
	if sub != nil {
		cons = []*constraint{newConstraint(sub, s1, false, C), newConstraint(sub, s2, true, C)}
		for _, c := range cons {
			c.weights()
		}
	}
	ac := stages.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	o1, err := stages.NewAdamW(s1.Params(), ac)
	if err != nil {
		return harnessResult{}, err
	}
	o2, err := stages.NewAdamW(s2.Params(), ac)
	if err != nil {
		return harnessResult{}, err
	}
	x := make([][]int32, M)
	y := make([][]int32, M)
	hb := make([][]float32, M)
	for m := range x {
		x[m], y[m], hb[m] = make([]int32, N), make([]int32, N), make([]float32, N*C)
	}
	gb := make([]float32, N*C)
	var fwdBytes, bwdBytes, tokens int
	for step := 0; step < steps; step++ {
		lr := learningRate(step, 30, steps, 2e-3, 2e-4)
		s1.ZeroGrad()
		s2.ZeroGrad()
		for m := 0; m < M; m++ {
			data.Batch(corpus.Train, seed, step, m, B, T, x[m], y[m])
			h, err := s1.Forward(m, B, T, x[m], nil)
			if err != nil {
				return harnessResult{}, err
			}
			n, err := lk.forward(hb[m], h, x[m], N)
			if err != nil {
				return harnessResult{}, fmt.Errorf("step %d forward: %w", step, err)
			}
			fwdBytes += n
			tokens += N
			if _, err := s2.ForwardLoss(m, B, T, x[m], hb[m], y[m]); err != nil {
				return harnessResult{}, err
			}
		}
		for m := 0; m < M; m++ {
			din, err := s2.Backward(m, nil, 1/float32(M))
			if err != nil {
				return harnessResult{}, err
			}
			n, err := lk.backward(gb, din, y[m], N)
			if err != nil {
				return harnessResult{}, fmt.Errorf("step %d backward: %w", step, err)
			}
			bwdBytes += n
			if _, err := s1.Backward(m, gb, 1/float32(M)); err != nil {
				return harnessResult{}, err
			}
		}
		// The tied embedding: both copies get the sum, first + last.
		g1, g2 := s1.TiedWeight().Grad, s2.TiedWeight().Grad
		for i := range g1 {
			g1[i] += g2[i]
		}
		copy(g2, g1)
		for _, c := range cons {
			c.grads()
		}
		// GradSumSquares leaves out the last stage's tied copy.
		ss := s1.GradSumSquares() + s2.GradSumSquares()
		scale := stages.ClipScale(ss, 1.0)
		stages.ScaleGrads(s1.Params(), scale)
		stages.ScaleGrads(s2.Params(), scale)
		o1.Step(float32(lr))
		o2.Step(float32(lr))
		for _, c := range cons {
			c.weights()
		}
	}
	// Held-out loss at the end: 8 eval batches of 16 windows, as the sweep.
	wins := data.EvalWindows(corpus.Val, seed, 8*16, T)
	if tl, ok := lk.(*tcLink); ok {
		if err := tl.startEval(); err != nil {
			return harnessResult{}, err
		}
	}
	var sum, sumExact float64
	var cnt int
	for i := 0; i+B <= len(wins); i += B {
		tok, tgt := x[0], y[0]
		for b := 0; b < B; b++ {
			for t := 0; t < T; t++ {
				tok[b*T+t], tgt[b*T+t] = int32(wins[i+b][t]), int32(wins[i+b][t+1])
			}
		}
		h, err := s1.Forward(M, B, T, tok, nil)
		if err != nil {
			return harnessResult{}, err
		}
		if err := lk.eval(hb[0], h, tok, N); err != nil {
			return harnessResult{}, err
		}
		v, err := s2.ForwardLoss(M, B, T, tok, hb[0], tgt)
		if err != nil {
			return harnessResult{}, err
		}
		ve, err := s2.ForwardLoss(M, B, T, tok, h, tgt)
		if err != nil {
			return harnessResult{}, err
		}
		sum += float64(v)
		sumExact += float64(ve)
		cnt++
	}
	r := harnessResult{
		fwdBPT:    float64(fwdBytes) / float64(tokens),
		bwdBPT:    float64(bwdBytes) / float64(tokens),
		evalLoss:  sum / float64(cnt),
		exactLoss: sumExact / float64(cnt),
	}
	if n := lk.noIDBytes(); n > 0 {
		r.fwdNoIDs = float64(n) / float64(tokens)
	}
	if tl, ok := lk.(*tcLink); ok {
		for _, e := range []*compression.TCEncoder{tl.fe, tl.be} {
			s := e.Stats()
			rows := float64(s.Rows)
			r.stats += fmt.Sprintf("\n  %-8s predictor removed %.1f%% of the energy; %.1f%% of levels non-zero; B/token: header %.3f rotation %.3f models %.3f stream %.3f (ids %.3f)",
				map[bool]string{true: "forward", false: "backward"}[e == tl.fe], 100*(1-s.Residual/s.Signal), 100*float64(s.NonZero)/float64(s.Levels),
				float64(s.HeaderBytes)/rows, float64(s.RotationBytes)/rows, float64(s.ModelBytes)/rows, float64(s.StreamBytes)/rows, s.IDBits/8/rows)
		}
	}
	return r, nil
}
