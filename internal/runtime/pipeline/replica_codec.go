package pipeline

import (
	"fmt"
	"sync/atomic"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/wire"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// replicaCodec is how a replica's gradients travel in its stage's sum
// ([compression.replicas], docs/swarm.md): which floats each pass of the
// chain sums and how their chunks are coded. sumReplicas runs the passes;
// this file says what goes into them and what comes out.
//
//   - none, fp16, int8: one pass over every tensor. A sender codes its
//     partial sum, the receiver decodes it before adding its own; the last
//     replica codes the total once and replaces its own by the decoded
//     value, which is what every other replica decodes, so all end with the
//     same bits. With error feedback each replica keeps what its coded
//     values missed (compression.Feedback) and adds it to its next step's
//     gradient before the sum.
//   - powersgd: two passes of raw float32 (compression.PowerSGD): the P
//     factors of every matrix that gains from factors, and beside them the
//     tensors sent whole (biases, LayerNorm, small matrices); then the Q
//     factors. The approximation P·Qᵀ is computed alike on every replica.
//   - Under compression.method = "subspace" the gradients of the weights
//     the constraint keeps in span(U) (constraint.go: rows of the token and
//     position embeddings, columns of the output projections) are
//     projected into span(U) before the optimizer anyway, so only their
//     coordinates matter: they travel as k coefficients a residual vector
//     (d/k less), which the method above then codes, and are expanded back
//     after the sum (before the ends' tied exchange, which takes the
//     summed, decoded halves).
//
// Error feedback and PowerSGD's warm start are per replica and are not in
// the stage's state (a checkpoint holds the first replicas' state, and the
// driver checks that every replica's state has the same digest): a
// restore resets them on every replica alike, so the replicas stay
// bit-identical, and the resumed run differs from an uninterrupted one by
// the residuals dropped (TestReplicaCodecsResume). A joiner starts with
// none and the seed's warm start; its first sum still gives it the others'
// bits, since P·Qᵀ is made of the two sums alone, and the sum's Q is the
// next warm start of every replica (TestSwarmChurnWithReplicaCodecs). Each
// step's state is kept apart from the one it started from until the sum
// completes, so a redone step (a replica dropped) starts from the same.
type replicaCodec struct {
	method  compression.ReduceMethod
	tensors []replicaTensor
	con     *constraint
	fb      *compression.Feedback // fp16, int8 with error feedback
	psgd    *compression.PowerSGD
	p, q    []float32 // powersgd: this replica's factors, then their sums
	mats    [][]float32
	values  int64 // gradient values of the stage: what fp32 would send
	cc      chainCoder
}

// replicaTensor is one parameter's part of the sum: its gradient, or the
// coefficients in span(U) of a constrained one.
type replicaTensor struct {
	p          *stages.Param
	coef       coefKind
	rows, cols int       // as the tensor travels
	buf        []float32 // what travels: p.Grad, or the coefficients
}

type coefKind int

const (
	coefNone coefKind = iota
	coefRows          // rows are residual vectors (embeddings): buf = g·U
	coefCols          // columns are residual vectors (output projections): buf = Uᵀ·g
)

// newReplicaCodec builds the sum's codec of w's stage: rc's method, seeded
// by the run's seed.
func newReplicaCodec(rc compression.ReduceConfig, seed uint64, w *Worker) (*replicaCodec, error) {
	c := &replicaCodec{method: rc.Method, con: w.codec.con}
	if c.method == compression.ReduceUnknown {
		c.method = compression.ReduceNone // a config built in code without defaults
	}
	rowsOf := map[*stages.Param]coefKind{}
	if c.con != nil {
		for _, p := range c.con.rows {
			rowsOf[p] = coefRows
		}
		for _, p := range c.con.cols {
			rowsOf[p] = coefCols
		}
	}
	tied := w.st.TiedWeight()
	C, K := w.C, 0
	if c.con != nil {
		K = c.con.basis.K
	}
	var mats []compression.Matrix
	var sizes []int
	for _, p := range w.st.Params() {
		sh, err := replicaShapeOf(p.Name, p.Shape, rowsOf[p], C, K, p == tied)
		if err != nil {
			return nil, fmt.Errorf("stage %d: %w", w.id, err)
		}
		if sh.n != len(p.Grad) {
			return nil, fmt.Errorf("stage %d: %s has %d values, shape %v", w.id, p.Name, len(p.Grad), p.Shape)
		}
		t := replicaTensor{p: p, coef: sh.coef, rows: sh.rows, cols: sh.cols, buf: p.Grad}
		if t.coef != coefNone {
			t.buf = make([]float32, t.rows*t.cols)
		}
		mats = append(mats, compression.Matrix{Rows: t.rows, Cols: t.cols, Key: sh.key})
		sizes = append(sizes, len(t.buf))
		c.values += int64(sh.n)
		c.tensors = append(c.tensors, t)
	}
	var err error
	switch {
	case c.method == compression.ReducePowerSGD:
		if c.psgd, err = compression.NewPowerSGD(mats, rc.RankOrDefault(), rc.ErrorFeedback, seed); err != nil {
			return nil, fmt.Errorf("stage %d: %w", w.id, err)
		}
		c.p, c.q = make([]float32, c.psgd.PLen()), make([]float32, c.psgd.QLen())
		c.mats = make([][]float32, len(c.tensors))
		for i, t := range c.tensors {
			c.mats[i] = t.buf
		}
	case c.method.Lossy() && rc.ErrorFeedback:
		c.fb = compression.NewFeedback(sizes)
	}
	return c, nil
}

// replicaShape is how one parameter's gradient travels in the sum.
type replicaShape struct {
	coef       coefKind
	rows, cols int    // as it travels: the gradient's, or its coefficients'
	n          int    // the gradient's values
	key        string // names it in PowerSGD's warm start
}

// replicaShapeOf is how the parameter called name, of shape shape, travels:
// whole as a rows×cols matrix (a 1-D one as 1×n), or under the subspace
// constraint (role) as its coefficients in span(U) (C the model width, K
// the subspace's). The tied embedding is keyed alike on both ends.
func replicaShapeOf(name string, shape []int, role coefKind, C, K int, tied bool) (replicaShape, error) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	sh := replicaShape{coef: role, n: n, key: name, rows: 1, cols: n}
	if tied {
		sh.key = "tied" // the first and last stage hold it under two names
	}
	switch role {
	case coefRows:
		sh.rows, sh.cols = n/C, K
	case coefCols:
		sh.rows, sh.cols = K, n/C
	default:
		if len(shape) == 2 {
			sh.rows, sh.cols = shape[0], shape[1]
		} else if len(shape) > 2 {
			return sh, fmt.Errorf("%s has shape %v: the replicas' sum takes tensors of 1 or 2 dimensions", name, shape)
		}
	}
	if role != coefNone && (C < 1 || K < 1 || n%C != 0) {
		return sh, fmt.Errorf("%s: %d values are not residual vectors of width %d in a subspace of %d", name, n, C, K)
	}
	return sh, nil
}

// ReplicaSumBytes is, per stage of layout, the wire bytes one link of the
// stage's chain carries each way in a step (one replica's whole gradient
// as cfg's [compression.replicas] codec sends it, in the frames the sum
// cuts: every pass of it together), and the largest of those frames (what
// each hop of the chain holds back before passing a frame on). It counts
// from the stages' tensor shapes, without building them, exactly what
// sumReplicas sends (TestReplicaSumBytesIsWhatRunsSend).
func ReplicaSumBytes(cfg config.Config, layout scheduler.Layout) (perLink, largestFrame []int64) {
	rc := cfg.Compression.Replicas
	method := rc.Method
	if method == compression.ReduceUnknown {
		method = compression.ReduceNone
	}
	cm := cfg.Compression.Method
	S := layout.Stages()
	constrained := S >= 2 && (cm == compression.MethodSubspace || cm == compression.MethodSubspaceTC)
	untied := engine.UntiedHead(cfg)
	model := engine.ModelConfig(cfg)
	perLink, largestFrame = make([]int64, S), make([]int64, S)
	for i := range perLink {
		r := layout.Range(i)
		first, last := layout.First(i), layout.Last(i)
		chunkM := method
		var parts []int // the floats of each part of every pass, as pass() lists them
		var pLen, qLen int
		for _, ps := range stages.StageParamShapes(model, r.Lo, r.Hi, first, last) {
			role := coefNone
			if constrained {
				role = constraintRole(ps.Name, last, untied)
			}
			sh, err := replicaShapeOf(ps.Name, ps.Shape, role, cfg.Model.NEmbd, int(cfg.Compression.Rank), false)
			if err != nil {
				continue // NewSwarmWorker refuses it
			}
			if method != compression.ReducePowerSGD {
				parts = append(parts, sh.rows*sh.cols)
				continue
			}
			if rk := compression.PowerSGDRank(sh.rows, sh.cols, rc.RankOrDefault()); rk > 0 {
				pLen += sh.rows * rk
				qLen += sh.cols * rk
			} else {
				parts = append(parts, sh.rows*sh.cols)
			}
		}
		if method == compression.ReducePowerSGD {
			parts = append([]int{pLen}, append(parts, qLen)...)
		}
		for _, n := range parts {
			for ; n > 0; n -= min(n, replicaChunk) {
				f := int64(wire.HeaderSize + compression.ReduceChunkLen(min(n, replicaChunk), chunkM))
				perLink[i] += f
				largestFrame[i] = max(largestFrame[i], f)
			}
		}
	}
	return perLink, largestFrame
}

// ReplicaSumPasses is how many sums over the chain one step's sum takes:
// 2 for PowerSGD (its P factors, then its Q), 1 for the others.
func ReplicaSumPasses(cfg config.Config) int {
	if cfg.Compression.Replicas.Method == compression.ReducePowerSGD {
		return 2
	}
	return 1
}

// rawBytes is what this replica's part of a sum would send in raw
// float32: its gradient once each way it sends (the chain's ends send one
// way, the others both), frame headers aside.
func (rp *replicaSet) rawBytes() int64 {
	ways := int64(2)
	if rp.r == 0 || rp.r == rp.R-1 {
		ways = 1
	}
	return ways * 4 * rp.codec.values
}

// reset drops the error-feedback residuals and the warm start (a restored
// state does not hold them; every replica resets alike).
func (c *replicaCodec) reset() {
	if c.fb != nil {
		c.fb.Reset()
	}
	if c.psgd != nil {
		c.psgd.Reset()
	}
}

// begin starts step's sum: the constrained gradients' coefficients, and
// each tensor's residual added (fp16, int8; PowerSGD adds its own).
func (c *replicaCodec) begin(step int) {
	for _, t := range c.tensors {
		switch t.coef {
		case coefRows:
			c.con.basis.Coeffs(t.buf, t.p.Grad, t.rows)
		case coefCols:
			c.con.basis.ColCoeffs(t.buf, t.p.Grad, t.cols)
		}
	}
	if c.fb != nil {
		c.fb.Begin(step)
		for i, t := range c.tensors {
			c.fb.Add(i, 0, t.buf)
		}
	}
	if c.psgd != nil {
		c.psgd.Begin(step)
	}
}

// replicaPart is a run of floats one pass sums, and where its error
// feedback lives (tensor -1: none).
type replicaPart struct {
	v           []float32
	tensor, off int
}

// pass returns what pass k of the sum carries and how its chunks are coded,
// after doing the codec's work on the previous pass's totals; nil parts
// when the sum is complete.
func (c *replicaCodec) pass(k int) ([]replicaPart, *chainCoder, error) {
	if c.psgd == nil {
		if k > 0 {
			return nil, nil, nil
		}
		parts := make([]replicaPart, len(c.tensors))
		for i, t := range c.tensors {
			parts[i] = replicaPart{v: t.buf, tensor: i}
		}
		return parts, c.coder(c.method, c.fb), nil
	}
	switch k {
	case 0:
		if err := c.psgd.P(c.mats, c.p); err != nil {
			return nil, nil, err
		}
		parts := []replicaPart{{v: c.p, tensor: -1}}
		for i, t := range c.tensors {
			if !c.psgd.LowRank(i) {
				parts = append(parts, replicaPart{v: t.buf, tensor: -1})
			}
		}
		return parts, c.coder(compression.ReducePowerSGD, nil), nil
	case 1:
		// The chain summed c.p in place: it is P over every replica.
		if err := c.psgd.Q(c.mats, c.p, c.q); err != nil {
			return nil, nil, err
		}
		return []replicaPart{{v: c.q, tensor: -1}}, c.coder(compression.ReducePowerSGD, nil), nil
	}
	if err := c.psgd.Expand(c.mats, c.q); err != nil {
		return nil, nil, err
	}
	return nil, nil, nil
}

// finish ends a sum that went through: the coefficients expanded back into
// the gradients, and the step's residuals kept for the next.
func (c *replicaCodec) finish() {
	for _, t := range c.tensors {
		switch t.coef {
		case coefRows:
			c.con.basis.Expand(t.p.Grad, t.buf, t.rows)
		case coefCols:
			c.con.basis.ExpandCols(t.p.Grad, t.buf, t.cols)
		}
	}
	if c.fb != nil {
		c.fb.Commit()
	}
	if c.psgd != nil {
		c.psgd.Commit()
	}
}

func (c *replicaCodec) coder(m compression.ReduceMethod, fb *compression.Feedback) *chainCoder {
	c.cc.method, c.cc.fb = m, fb
	return &c.cc
}

// keepUndecodedTotal (tests only) makes the last replica keep its own
// undecoded total instead of what it sent: the bug that leaves the
// replicas with different bits, which the driver must catch.
var keepUndecodedTotal atomic.Bool

// chainCoder codes the chunks of one pass.
type chainCoder struct {
	method compression.ReduceMethod
	fb     *compression.Feedback
	// got and in are the up pass's own: what a sent chunk decodes to, and
	// a received chunk before it is added (the pass down decodes in place).
	got, in []float32
}

// frame codes chunk k (part c) of this replica's partial sum, or of the
// total when last: then c.v is replaced by its decoded value, which is
// what every other replica gets. With error feedback it keeps what the
// receiver will miss.
func (cc *chainCoder) frame(stage int, fstep uint64, k int, c replicaPart, last bool) ([]byte, error) {
	cc.got = resizeF32(cc.got, len(c.v))
	p, err := compression.AppendReduceChunk(nil, c.v, cc.got, cc.method)
	if err != nil {
		return nil, fmt.Errorf("code gradient chunk %d: %w", k, err)
	}
	if cc.fb != nil && c.tensor >= 0 {
		cc.fb.Keep(c.tensor, c.off, c.v, cc.got)
	}
	if last && !keepUndecodedTotal.Load() {
		copy(c.v, cc.got)
	}
	return wire.Append(nil, wire.Header{Type: wire.TypeReplicaGrad, Codec: uint8(cc.method.ChunkID()), Stage: uint16(stage), Step: fstep, Micro: uint32(k)}, p), nil
}

// decode decodes a chunk's payload into dst: added after what dst holds
// (add, on the way up) or in its place (the total, on the way down).
func (cc *chainCoder) decode(dst []float32, p []byte, add bool) error {
	if !add {
		return compression.DecodeReduceChunk(dst, p, cc.method)
	}
	cc.in = resizeF32(cc.in, len(dst))
	if err := compression.DecodeReduceChunk(cc.in, p, cc.method); err != nil {
		return err
	}
	for i, v := range cc.in {
		dst[i] = v + dst[i]
	}
	return nil
}

func resizeF32(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// splitParts cuts a pass's parts into chunks of at most replicaChunk
// floats, each within one part (so a tensor's chunks start at its first
// value, whatever comes before it in the stage).
func splitParts(parts []replicaPart) []replicaPart {
	var out []replicaPart
	for _, p := range parts {
		for off := 0; off < len(p.v); off += replicaChunk {
			n := min(len(p.v)-off, replicaChunk)
			out = append(out, replicaPart{v: p.v[off : off+n], tensor: p.tensor, off: off})
		}
	}
	return out
}
