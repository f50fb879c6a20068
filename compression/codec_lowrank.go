package compression

import (
	"encoding/binary"
	"fmt"
)

// LowRank sends a rank-r factorization of each rows×cols matrix, PowerSGD
// style (Vogels et al. 2019): M = x + residual; Iters power iterations
// P = M·Q, orthonormalize P (modified Gram-Schmidt), Q = Mᵀ·P, starting from
// the previous call's Q (a warm start: consecutive micro-batches share their
// dominant directions, so one iteration is usually enough). The receiver
// rebuilds P·Qᵀ. With error feedback the part not captured (and the factor
// rounding) is carried into the next call.
//
// It is exact (to float rounding) on matrices of rank ≤ r. Wire bytes are
// (rows+cols)·r·bytes(precision) instead of rows·cols·4.
//
// Payload: u8 precision, uvarint r, P (rows×r), Q (cols×r), row-major. The
// rank travels in the payload, so SetRank needs no coordination.
//
// Error feedback was designed for gradients that are summed over steps. On
// forward activations it adds micro-batch t's residual to micro-batch t+1,
// a different batch: whether that helps training is an experiment, hence
// Config.ErrorFeedback. A message of a new shape (a short last micro-batch)
// starts a fresh residual.
//
// A LowRank value holds its residual and warm start: one per link direction.
type LowRank struct {
	// Rank r; clamped to min(rows, cols) per call.
	Rank int
	// Iters is the number of power iterations per call (1 or 2).
	Iters int
	// Precision of the factors: FP32, FP16 or BF16.
	Precision Precision
	// Feedback enables error feedback.
	Feedback bool
	// Seed makes the first warm start deterministic.
	Seed uint64

	residual []float32
	q        []float32 // warm start, cols×qr
	qr, qc   int
	p        []float32
	pq       []float32 // rounded factors, for feedback
	recon    []float32
	rng      *rng
	orth     []float64
}

// maxRank bounds the rank a payload may claim (beyond min(rows, cols)).
const maxRank = 1 << 14

// ID implements Codec.
func (*LowRank) ID() ID { return IDLowRank }

// MaxEncodedLen implements Codec.
func (l *LowRank) MaxEncodedLen(rows, cols int) int {
	r := min(rows, cols)
	return 1 + binary.MaxVarintLen32 + (rows+cols)*r*4
}

// SetRank changes the rank from the next call on, keeping the overlapping
// part of the warm start. The residual is kept: it is still what was not
// sent.
func (l *LowRank) SetRank(r int) { l.Rank = r }

// Reset drops the residual and the warm start.
func (l *LowRank) Reset() {
	l.residual = nil
	l.q = nil
	l.qr, l.qc = 0, 0
}

func (l *LowRank) validate() error {
	if l.Rank < 1 || l.Rank > maxRank {
		return fmt.Errorf("%w: compression.rank = %d: want 1..%d", ErrConfig, l.Rank, maxRank)
	}
	if l.Iters < 1 || l.Iters > 8 {
		return fmt.Errorf("%w: compression.power_iters = %d: want 1..8", ErrConfig, l.Iters)
	}
	if l.Precision != FP32 && l.Precision != FP16 && l.Precision != BF16 {
		return fmt.Errorf("%w: lowrank precision %v: want fp32, fp16 or bf16", ErrConfig, l.Precision)
	}
	return nil
}

// warm returns the cols×r warm-start Q, resizing it if the shape changed.
func (l *LowRank) warm(cols, r int) []float32 {
	if l.qc == cols && l.qr == r && len(l.q) == cols*r {
		return l.q
	}
	nq := make([]float32, cols*r)
	if l.rng == nil {
		l.rng = newRNG(l.Seed, "lowrank-q")
	}
	g := l.rng
	for j := 0; j < cols; j++ {
		for k := 0; k < r; k++ {
			if l.qc == cols && k < l.qr {
				nq[j*r+k] = l.q[j*l.qr+k]
			} else {
				nq[j*r+k] = float32(g.normal())
			}
		}
	}
	l.q, l.qc, l.qr = nq, cols, r
	return nq
}

// Encode implements Codec.
func (l *LowRank) Encode(dst []byte, x []float32, rows, cols int) ([]byte, error) {
	if err := l.validate(); err != nil {
		return dst, err
	}
	if err := checkShape(len(x), rows, cols); err != nil {
		return dst, fmt.Errorf("lowrank: encode: %w", err)
	}
	n := len(x)
	r := min(l.Rank, rows, cols)
	m := x
	if l.Feedback {
		if len(l.residual) != n {
			l.residual = make([]float32, n)
		}
		m = l.residual
		for i, v := range x {
			m[i] += v
		}
	}
	for i, v := range m {
		if !isFinite32(v) {
			if l.Feedback {
				clear(l.residual)
			}
			return dst, fmt.Errorf("lowrank: encode: element %d: %w", i, ErrNonFinite)
		}
	}
	if r == 0 {
		dst = append(dst, byte(l.Precision))
		return binary.AppendUvarint(dst, 0), nil
	}
	q := l.warm(cols, r)
	l.p = resize(l.p, rows*r)
	p := l.p
	for it := 0; it < l.Iters; it++ {
		mulAB(p, m, q, rows, cols, r)
		orthonormalize(p, rows, r, &l.orth)
		mulAtB(q, m, p, rows, cols, r)
	}
	for _, v := range q {
		if !isFinite32(v) {
			// |x| near MaxFloat32 overflows Mᵀ·P: nothing sensible to send.
			l.Reset()
			return dst, fmt.Errorf("lowrank: encode: factor Q overflows float32 (|x| too large): %w", ErrNonFinite)
		}
	}
	saturate(q, l.Precision)
	dst = append(dst, byte(l.Precision))
	dst = binary.AppendUvarint(dst, uint64(r))
	dst = appendValues(dst, p, l.Precision)
	dst = appendValues(dst, q, l.Precision)
	defer l.revive(q, cols, r)
	if l.Feedback {
		// The receiver sees the rounded factors; feed back exactly what it
		// misses.
		l.pq = resize(l.pq, (rows+cols)*r)
		pr, qr := l.pq[:rows*r], l.pq[rows*r:]
		copy(pr, p)
		copy(qr, q)
		roundTrip(pr, l.Precision)
		roundTrip(qr, l.Precision)
		l.recon = resize(l.recon, n)
		mulABt(l.recon, pr, qr, rows, cols, r)
		for i := range m {
			m[i] -= l.recon[i]
		}
	}
	return dst, nil
}

// Decode implements Codec.
func (l *LowRank) Decode(dst []float32, payload []byte, rows, cols int) error {
	if err := checkShape(len(dst), rows, cols); err != nil {
		return fmt.Errorf("lowrank: decode: %w", err)
	}
	rd := reader{b: payload}
	p := Precision(rd.byte("precision"))
	if rd.err == nil && p != FP32 && p != FP16 && p != BF16 {
		rd.fail("factor precision %v", p)
	}
	r := rd.uvarint("rank", min(rows, cols))
	vb := precBytes(p)
	pb := rd.take(rows*r*vb, "P")
	qb := rd.take(cols*r*vb, "Q")
	if err := rd.done(); err != nil {
		return fmt.Errorf("lowrank: decode: %w", err)
	}
	if r == 0 {
		clear(dst)
		return nil
	}
	l.pq = resize(l.pq, (rows+cols)*r)
	pf, qf := l.pq[:rows*r], l.pq[rows*r:]
	readValues(pf, pb, p)
	readValues(qf, qb, p)
	for i, v := range l.pq {
		if !isFinite32(v) {
			return fmt.Errorf("lowrank: decode: %w: factor value %d is %v", ErrCorrupt, i, v)
		}
	}
	mulABt(dst, pf, qf, rows, cols, r)
	return nil
}

func resize(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// Apply switches to an AutoRank setting from the next call on.
func (l *LowRank) Apply(s Setting) {
	l.Rank = s.Rank
	l.Precision = s.Precision
}

// revive re-draws the warm-start columns that came out exactly zero (the
// input had rank < r, e.g. an all-zero micro-batch). A zero column of Q
// gives a zero column of P next time and stays zero for ever, silently
// lowering the rank; after the PowerSGD warm start this is the one case it
// cannot recover from by itself.
func (l *LowRank) revive(q []float32, cols, r int) {
	for k := 0; k < r; k++ {
		zero := true
		for j := 0; j < cols && zero; j++ {
			zero = q[j*r+k] == 0
		}
		if zero {
			for j := 0; j < cols; j++ {
				q[j*r+k] = float32(l.rng.normal())
			}
		}
	}
}
