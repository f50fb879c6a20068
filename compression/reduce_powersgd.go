package compression

import "fmt"

// Matrix is one tensor of a PowerSGD sum: Rows×Cols row-major. Key names it
// in the warm start's seed: two stages holding the same tensor (the tied
// embedding) give it the same key, so their sums agree bit for bit.
type Matrix struct {
	Rows, Cols int
	Key        string
}

// PowerSGD is one replica's side of a low-rank sum of matrices over a
// stage's replicas (Vogels et al. 2019, "PowerSGD: Practical Low-Rank
// Gradient Compression for Distributed Optimization", Algorithm 1 with one
// power iteration and a warm start). For every matrix M_w (this replica's
// gradient plus its residual):
//
//  1. P_w = M_w·Q, Q the previous step's (the same on every replica);
//     P = Σ_w P_w over the chain (the runtime's first sum);
//  2. P ← orthonormalize(P) (modified Gram–Schmidt in float64, the same
//     bits on every replica); Q_w = M_wᵀ·P; Q = Σ_w Q_w (the second sum);
//  3. the sum's approximation is P·Qᵀ = P·Pᵀ·Σ_w M_w on every replica, and
//     Q is the next step's warm start.
//
// With error feedback replica w keeps e_w = M_w − P·Q_wᵀ = M_w − P·Pᵀ·M_w,
// what its own gradient put outside span(P): the residuals add up to
// Σ M_w − P·Qᵀ, what the sum missed. (PyTorch's hook keeps M_w − P·Qᵀ/W,
// which has the same sum but mixes the other replicas' gradients into each
// residual.)
//
// Matrices whose factors would not be smaller than themselves
// ((rows+cols)·r ≥ rows·cols) are not low-rank (LowRank is false): the
// caller sums them whole. The first Q is Gaussian from the run seed and the
// matrix's Key; a column of Q that comes out zero (every replica's gradient
// had rank < r) is drawn again from the seed, the key, the step and the
// column, so every replica draws the same. Begin, Commit and Reset keep the
// residuals and the warm start per step as Feedback does.
type PowerSGD struct {
	mats     []psgdMatrix
	feedback *Feedback // residuals of the low-rank matrices; nil without feedback
	seed     uint64
	step     int
	begun    bool
	done     bool
	pLen     int
	qLen     int
	orth     []float64
	scratch  []float32
}

type psgdMatrix struct {
	Matrix
	r         int // 0: not low-rank
	pOff      int // offset of P in the first sum, of Q in the second
	qOff      int
	qIn, qOut []float32 // warm start entering the step, and the one it produces
	p         []float32 // this step's orthonormal P
}

// PowerSGDRank is the rank a rows×cols matrix travels at in a PowerSGD sum
// of rank r: min(r, rows, cols), or 0 (sent whole) when its factors would
// not be smaller than itself.
func PowerSGDRank(rows, cols, r int) int {
	if k := min(r, rows, cols); k > 0 && (rows+cols)*k < rows*cols {
		return k
	}
	return 0
}

// NewPowerSGD sets up the sum of mats at rank r, with or without error
// feedback.
func NewPowerSGD(mats []Matrix, r int, feedback bool, seed uint64) (*PowerSGD, error) {
	if r < 1 || r > maxRank {
		return nil, fmt.Errorf("%w: compression.replicas.rank = %d: want 1..%d", ErrConfig, r, maxRank)
	}
	s := &PowerSGD{seed: seed, mats: make([]psgdMatrix, len(mats))}
	var sizes []int
	for i, m := range mats {
		if m.Rows < 0 || m.Cols < 0 || (m.Cols != 0 && m.Rows > maxElems/m.Cols) {
			return nil, fmt.Errorf("%w: powersgd matrix %s is %d×%d", ErrShape, m.Key, m.Rows, m.Cols)
		}
		pm := psgdMatrix{Matrix: m}
		if k := PowerSGDRank(m.Rows, m.Cols, r); k > 0 {
			pm.r = k
			pm.pOff, pm.qOff = s.pLen, s.qLen
			s.pLen += m.Rows * k
			s.qLen += m.Cols * k
			pm.qIn, pm.qOut = make([]float32, m.Cols*k), make([]float32, m.Cols*k)
			pm.p = make([]float32, m.Rows*k)
		}
		sizes = append(sizes, m.Rows*m.Cols*min(pm.r, 1))
		s.mats[i] = pm
	}
	if feedback {
		s.feedback = NewFeedback(sizes)
	}
	s.Reset()
	return s, nil
}

// LowRank reports whether matrix i travels as factors.
func (s *PowerSGD) LowRank(i int) bool { return s.mats[i].r > 0 }

// Rank is matrix i's rank (0 if it is not low-rank).
func (s *PowerSGD) Rank(i int) int { return s.mats[i].r }

// PLen and QLen are the lengths of the two sums' slices.
func (s *PowerSGD) PLen() int { return s.pLen }

// QLen is the length of the second sum's slice.
func (s *PowerSGD) QLen() int { return s.qLen }

// Reset forgets the residuals and draws the first warm start again.
func (s *PowerSGD) Reset() {
	for i := range s.mats {
		m := &s.mats[i]
		if m.r == 0 {
			continue
		}
		g := newRNG(s.seed, "replica-powersgd/"+m.Key)
		for j := range m.qIn {
			m.qIn[j] = float32(g.normal())
		}
		clear(m.qOut)
	}
	if s.feedback != nil {
		s.feedback.Reset()
	}
	s.begun, s.done = false, false
}

// Begin starts step (see Feedback).
func (s *PowerSGD) Begin(step int) {
	if s.begun && step != s.step && s.done {
		for i := range s.mats {
			m := &s.mats[i]
			m.qIn, m.qOut = m.qOut, m.qIn
		}
	}
	s.step, s.begun, s.done = step, true, false
	if s.feedback != nil {
		s.feedback.Begin(step)
	}
}

// Commit marks the step's sums complete.
func (s *PowerSGD) Commit() {
	s.done = true
	if s.feedback != nil {
		s.feedback.Commit()
	}
}

// Residual is matrix i's error-feedback residual as the next step will add
// it (nil without feedback or for a matrix that is not low-rank).
func (s *PowerSGD) Residual(i int) []float32 {
	if s.feedback == nil || s.mats[i].r == 0 {
		return nil
	}
	return s.feedback.Residual(i)
}

func (s *PowerSGD) check(ms [][]float32, sum []float32, n int) error {
	if len(ms) != len(s.mats) || len(sum) != n {
		return fmt.Errorf("%w: powersgd: %d matrices and %d sum values, want %d and %d", ErrShape, len(ms), len(sum), len(s.mats), n)
	}
	for i, m := range s.mats {
		if len(ms[i]) != m.Rows*m.Cols {
			return fmt.Errorf("%w: powersgd matrix %s holds %d values, want %d×%d", ErrShape, m.Key, len(ms[i]), m.Rows, m.Cols)
		}
	}
	return nil
}

// P adds each low-rank matrix's residual into it (ms[i] becomes M_w) and
// writes M_w·Q of each into p (PLen values): this replica's part of the
// first sum.
func (s *PowerSGD) P(ms [][]float32, p []float32) error {
	if err := s.check(ms, p, s.pLen); err != nil {
		return err
	}
	for i := range s.mats {
		m := &s.mats[i]
		if m.r == 0 {
			continue
		}
		if s.feedback != nil {
			s.feedback.Add(i, 0, ms[i])
		}
		mulAB(p[m.pOff:m.pOff+m.Rows*m.r], ms[i], m.qIn, m.Rows, m.Cols, m.r)
	}
	return nil
}

// Q takes the first sum (psum, over every replica), orthonormalizes each
// matrix's P, and writes M_wᵀ·P of each into q (QLen values): this
// replica's part of the second sum. With feedback it keeps
// M_w − P·(M_wᵀ·P)ᵀ as the residual.
func (s *PowerSGD) Q(ms [][]float32, psum, q []float32) error {
	if err := s.check(ms, psum, s.pLen); err != nil {
		return err
	}
	if len(q) != s.qLen {
		return fmt.Errorf("%w: powersgd: %d Q values, want %d", ErrShape, len(q), s.qLen)
	}
	for i := range s.mats {
		m := &s.mats[i]
		if m.r == 0 {
			continue
		}
		copy(m.p, psum[m.pOff:m.pOff+m.Rows*m.r])
		orthonormalize(m.p, m.Rows, m.r, &s.orth)
		qw := q[m.qOff : m.qOff+m.Cols*m.r]
		mulAtB(qw, ms[i], m.p, m.Rows, m.Cols, m.r)
		if s.feedback != nil {
			s.scratch = resize(s.scratch, m.Rows*m.Cols)
			mulABt(s.scratch, m.p, qw, m.Rows, m.Cols, m.r)
			s.feedback.Keep(i, 0, ms[i], s.scratch)
		}
	}
	return nil
}

// Expand takes the second sum (qsum) and sets every low-rank matrix to
// P·Qᵀ, the sum's approximation (the same bits on every replica, since P
// and Q are); Q is the next step's warm start. Matrices that are not
// low-rank are left alone: the caller sums them whole.
func (s *PowerSGD) Expand(ms [][]float32, qsum []float32) error {
	if err := s.check(ms, qsum, s.qLen); err != nil {
		return err
	}
	for i := range s.mats {
		m := &s.mats[i]
		if m.r == 0 {
			continue
		}
		qs := qsum[m.qOff : m.qOff+m.Cols*m.r]
		for _, v := range qs {
			if !isFinite32(v) {
				return fmt.Errorf("powersgd: Q of %s: %w", m.Key, ErrNonFinite)
			}
		}
		mulABt(ms[i], m.p, qs, m.Rows, m.Cols, m.r)
		copy(m.qOut, qs)
		s.revive(m)
	}
	return nil
}

// revive redraws the warm-start columns of m that came out exactly zero:
// a zero column of Q gives a zero column of P and stays zero for ever.
func (s *PowerSGD) revive(m *psgdMatrix) {
	for k := 0; k < m.r; k++ {
		zero := true
		for j := 0; j < m.Cols && zero; j++ {
			zero = m.qOut[j*m.r+k] == 0
		}
		if zero {
			g := newRNG(s.seed, fmt.Sprintf("replica-powersgd/%s/step %d/column %d", m.Key, s.step, k))
			for j := 0; j < m.Cols; j++ {
				m.qOut[j*m.r+k] = float32(g.normal())
			}
		}
	}
}
