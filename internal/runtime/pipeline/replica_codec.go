package pipeline

import (
	"fmt"
	"sync/atomic"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/wire"
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
//     after the sum. So the tied embedding's gradient, which the first and
//     last stage each sum over their replicas, is coded alike at both ends.
//
// Error feedback and PowerSGD's warm start are per replica and are not in
// the stage's state (a checkpoint holds the first replicas' state, and the
// driver checks that every replica's state has the same digest): a
// restore resets them on every replica alike, so the replicas stay
// bit-identical, and the resumed run differs from an uninterrupted one by
// the residuals dropped (TestReplicaCodecsResume).
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
	var mats []compression.Matrix
	var sizes []int
	for _, p := range w.st.Params() {
		t := replicaTensor{p: p, coef: rowsOf[p], buf: p.Grad}
		n := len(p.Grad)
		switch t.coef {
		case coefRows:
			t.rows, t.cols = n/c.con.C, c.con.basis.K
		case coefCols:
			t.rows, t.cols = c.con.basis.K, n/c.con.C
		default:
			t.rows, t.cols = 1, n
			if len(p.Shape) == 2 {
				t.rows, t.cols = p.Shape[0], p.Shape[1]
			}
		}
		if t.rows*t.cols != n && t.coef == coefNone {
			return nil, fmt.Errorf("stage %d: %s has %d values, shape %v", w.id, p.Name, n, p.Shape)
		}
		if t.coef != coefNone {
			t.buf = make([]float32, t.rows*t.cols)
		}
		key := p.Name
		if p == tied {
			key = "tied" // the first and last stage hold it under two names
		}
		mats = append(mats, compression.Matrix{Rows: t.rows, Cols: t.cols, Key: key})
		sizes = append(sizes, len(t.buf))
		c.values += int64(n)
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
