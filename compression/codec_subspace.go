package compression

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Subspace is the Protocol Models codec (arXiv 2506.01260). The model keeps
// every weight that writes into the residual stream inside span(U) (see
// Basis.ProjectRows/ProjectCols), so at a stage boundary h = E0[tok] + U·c
// exactly, and:
//
//   - forward (EncodeWithTokens): send the token ids and c = Uᵀ(h − E0[tok]),
//     K numbers per token; the receiver rebuilds h = E0[tok] + U·c. Exact (to
//     the coefficient precision) when h has that form; otherwise it delivers
//     the projection E0[tok] + U·Uᵀ(h − E0[tok]).
//   - backward (Encode/Decode, the plain Codec methods): send Uᵀg; the
//     receiver gets U·Uᵀ·g, which is the exact gradient for everything
//     upstream of the boundary because upstream only moves h inside span(U).
//
// Coefficients travel as FP32, FP16, BF16 or Int8 (one float32 absmax scale
// per row), or Int6/Int4/Int3/Int2 (one bf16 scale per row, packed codes; nearest
// rounding forward, unbiased stochastic rounding backward: see lowbit.go). Token ids travel as uint8 when Vocab ≤ 256, uint16 when ≤ 65536,
// else uint32, optionally lz4'd (kept only when smaller).
//
// Payload: u8 kind (0 backward, 1 forward), u8 coefficient precision; forward
// then has u8 token width (1, 2, 4; +0x10 when lz4'd), uvarint token bytes,
// the token bytes; then coefficients (Int8: rows scales, then rows×K codes).
//
// Subspace holds only fixed tables and scratch: it has no memory between
// calls, but its scratch makes it unsafe for concurrent use.
type Subspace struct {
	Basis *Basis
	// E0 is the fixed token-embedding table, Vocab×D.
	E0    []float32
	Vocab int
	// Precision of the coefficients.
	Precision Precision
	// LZ4Tokens lz4-compresses the token id stream when that shrinks it.
	LZ4Tokens bool

	// rng draws the stochastic rounding of int4/int6 gradients.
	rng  *rng
	c    []float32
	diff []float32
	tok  []byte
	pk   []byte
}

// DefaultEmbedStd is the standard deviation of E0: nanoGPT's embedding init.
const DefaultEmbedStd = 0.02

// NewSubspace derives U (d×k) and E0 (vocab×d, std DefaultEmbedStd) from
// seed. Every stage of a run must call it with the same arguments.
func NewSubspace(seed uint64, d, k, vocab int, prec Precision) (*Subspace, error) {
	if prec != FP32 && prec != FP16 && prec != BF16 && prec != Int8 && lowBits(prec) == 0 {
		return nil, fmt.Errorf("%w: compression.precision = %v: subspace wants fp32, fp16, bf16, int8, int6, int4, int3 or int2", ErrConfig, prec)
	}
	b, err := NewBasis(seed, d, k)
	if err != nil {
		return nil, err
	}
	e0, err := Embeddings(seed, vocab, d, DefaultEmbedStd)
	if err != nil {
		return nil, err
	}
	return &Subspace{Basis: b, E0: e0, Vocab: vocab, Precision: prec, rng: newRNG(seed, "subspace-rounding")}, nil
}

const (
	kindBackward = 0
	kindForward  = 1
	tokLZ4       = 0x10
)

// ID implements Codec.
func (*Subspace) ID() ID { return IDSubspace }

// MaxEncodedLen implements Codec.
func (s *Subspace) MaxEncodedLen(rows, cols int) int {
	return 3 + binary.MaxVarintLen32 + rows*4 + rows*4 + rows*s.Basis.K*4
}

func (s *Subspace) tokWidth() int {
	switch {
	case s.Vocab <= 1<<8:
		return 1
	case s.Vocab <= 1<<16:
		return 2
	}
	return 4
}

func (s *Subspace) check(n, rows, cols int) error {
	if cols != s.Basis.D {
		return fmt.Errorf("%w: %d columns, subspace basis width is %d", ErrShape, cols, s.Basis.D)
	}
	return checkShape(n, rows, cols)
}

// Encode sends the gradient path: Uᵀg per row.
func (s *Subspace) Encode(dst []byte, g []float32, rows, cols int) ([]byte, error) {
	if err := s.check(len(g), rows, cols); err != nil {
		return dst, fmt.Errorf("subspace: encode: %w", err)
	}
	s.c = resize(s.c, rows*s.Basis.K)
	s.Basis.Coeffs(s.c, g, rows)
	dst = append(dst, kindBackward, byte(s.Precision))
	return s.appendCoeffsRounding(dst, rows, true)
}

// Decode writes U·Uᵀg per row into dst.
func (s *Subspace) Decode(dst []float32, payload []byte, rows, cols int) error {
	if err := s.check(len(dst), rows, cols); err != nil {
		return fmt.Errorf("subspace: decode: %w", err)
	}
	r := reader{b: payload}
	if kind := r.byte("kind"); r.err == nil && kind != kindBackward {
		r.fail("kind %d: a forward payload needs DecodeWithTokens", kind)
	}
	if err := s.readCoeffs(&r, rows); err != nil {
		return fmt.Errorf("subspace: decode: %w", err)
	}
	s.Basis.Expand(dst, s.c, rows)
	return nil
}

// EncodeWithTokens sends the forward path: token ids and Uᵀ(h − E0[tok]).
func (s *Subspace) EncodeWithTokens(dst []byte, h []float32, tokens []int32, rows, cols int) ([]byte, error) {
	if err := s.check(len(h), rows, cols); err != nil {
		return dst, fmt.Errorf("subspace: encode: %w", err)
	}
	if len(tokens) != rows {
		return dst, fmt.Errorf("subspace: encode: %w: %d token ids for %d rows", ErrShape, len(tokens), rows)
	}
	d, k := s.Basis.D, s.Basis.K
	s.c = resize(s.c, rows*k)
	s.diff = resize(s.diff, rows*d)
	for i, t := range tokens {
		if t < 0 || int(t) >= s.Vocab {
			return dst, fmt.Errorf("subspace: encode: row %d: token id %d outside vocabulary 0..%d", i, t, s.Vocab-1)
		}
		e := s.E0[int(t)*d : (int(t)+1)*d]
		df := s.diff[i*d : (i+1)*d]
		for j, v := range h[i*d : (i+1)*d] {
			df[j] = v - e[j]
		}
	}
	s.Basis.Coeffs(s.c, s.diff, rows)
	w := s.tokWidth()
	s.tok = s.tok[:0]
	for _, t := range tokens {
		switch w {
		case 1:
			s.tok = append(s.tok, byte(t))
		case 2:
			s.tok = binary.LittleEndian.AppendUint16(s.tok, uint16(t))
		default:
			s.tok = binary.LittleEndian.AppendUint32(s.tok, uint32(t))
		}
	}
	dst = append(dst, kindForward, byte(s.Precision))
	if s.LZ4Tokens {
		var applied bool
		s.pk, applied = Compress(s.pk[:0], s.tok, 1)
		if applied {
			dst = append(dst, byte(w)|tokLZ4)
			dst = binary.AppendUvarint(dst, uint64(len(s.pk)))
			dst = append(dst, s.pk...)
			return s.appendCoeffs(dst, rows)
		}
	}
	dst = append(dst, byte(w))
	dst = binary.AppendUvarint(dst, uint64(len(s.tok)))
	dst = append(dst, s.tok...)
	return s.appendCoeffs(dst, rows)
}

// DecodeWithTokens rebuilds h = E0[tok] + U·c and the token ids.
func (s *Subspace) DecodeWithTokens(h []float32, tokens []int32, payload []byte, rows, cols int) error {
	if err := s.check(len(h), rows, cols); err != nil {
		return fmt.Errorf("subspace: decode: %w", err)
	}
	if len(tokens) != rows {
		return fmt.Errorf("subspace: decode: %w: %d token slots for %d rows", ErrShape, len(tokens), rows)
	}
	r := reader{b: payload}
	if kind := r.byte("kind"); r.err == nil && kind != kindForward {
		r.fail("kind %d: a backward payload needs Decode", kind)
	}
	if err := s.readTokensThenCoeffs(&r, tokens, rows); err != nil {
		return fmt.Errorf("subspace: decode: %w", err)
	}
	d := s.Basis.D
	s.Basis.Expand(h, s.c, rows)
	for i, t := range tokens {
		e := s.E0[int(t)*d : (int(t)+1)*d]
		hr := h[i*d : (i+1)*d]
		for j := range hr {
			hr[j] += e[j]
		}
	}
	return nil
}

func (s *Subspace) readTokensThenCoeffs(r *reader, tokens []int32, rows int) error {
	p := Precision(r.byte("precision"))
	tf := r.byte("token format")
	w := int(tf &^ tokLZ4)
	if r.err == nil && w != s.tokWidth() {
		r.fail("token width %d, vocabulary %d needs %d", w, s.Vocab, s.tokWidth())
	}
	nb := r.uvarint("token bytes", rows*4+64)
	raw := r.take(nb, "token ids")
	if r.err != nil {
		return r.err
	}
	if tf&tokLZ4 != 0 {
		var err error
		s.tok, err = Decompress(s.tok[:0], raw, rows*w)
		if err != nil {
			return fmt.Errorf("token ids: %w", err)
		}
		raw = s.tok
	}
	if len(raw) != rows*w {
		return fmt.Errorf("%w: %d token bytes for %d rows of width %d", ErrCorrupt, len(raw), rows, w)
	}
	for i := range tokens {
		var t uint32
		switch w {
		case 1:
			t = uint32(raw[i])
		case 2:
			t = uint32(binary.LittleEndian.Uint16(raw[2*i:]))
		default:
			t = binary.LittleEndian.Uint32(raw[4*i:])
		}
		if t >= uint32(s.Vocab) {
			return fmt.Errorf("%w: row %d: token id %d outside vocabulary 0..%d", ErrCorrupt, i, t, s.Vocab-1)
		}
		tokens[i] = int32(t)
	}
	return s.readCoeffsAfterPrec(r, p, rows)
}

func (s *Subspace) appendCoeffs(dst []byte, rows int) ([]byte, error) {
	return s.appendCoeffsRounding(dst, rows, false)
}

// appendCoeffsRounding appends s.c; stoch asks for stochastic rounding
// (gradients) where the precision has coarse levels (int4, int6).
func (s *Subspace) appendCoeffsRounding(dst []byte, rows int, stoch bool) ([]byte, error) {
	k := s.Basis.K
	if b := lowBits(s.Precision); b > 0 {
		if s.rng == nil {
			s.rng = newRNG(0, "subspace-rounding") // a Subspace built by hand
		}
		return appendLowBit(dst, s.c, rows, k, b, stoch, s.rng)
	}
	if s.Precision != Int8 {
		for i, v := range s.c {
			if !isFinite32(v) {
				return dst, fmt.Errorf("subspace: encode: row %d: %w", i/k, ErrNonFinite)
			}
		}
		saturate(s.c, s.Precision)
		return appendValues(dst, s.c, s.Precision), nil
	}
	dst, w := grow(dst, rows*4+rows*k)
	scales, codes := w[:rows*4], w[rows*4:]
	for i := 0; i < rows; i++ {
		row := s.c[i*k : (i+1)*k]
		var amax float32
		for _, v := range row {
			amax = max(amax, abs32(v))
		}
		if !(amax <= math.MaxFloat32) {
			return dst[:len(dst)-len(w)], fmt.Errorf("subspace: encode: row %d: %w", i, ErrNonFinite)
		}
		scale := int8Scale(amax)
		if !lowScaleOK(scale, 127, k) {
			return dst[:len(dst)-len(w)], fmt.Errorf("subspace: encode: row %d: |c| up to %g: %w (int8 coefficients need |c|·k ≤ %g)", i, amax, ErrNonFinite, lowScaleLimit)
		}
		binary.LittleEndian.PutUint32(scales[4*i:], math.Float32bits(scale))
		quantBlock(codes[i*k:(i+1)*k], row, scale)
	}
	return dst, nil
}

func (s *Subspace) readCoeffs(r *reader, rows int) error {
	p := Precision(r.byte("precision"))
	return s.readCoeffsAfterPrec(r, p, rows)
}

func (s *Subspace) readCoeffsAfterPrec(r *reader, p Precision, rows int) error {
	k := s.Basis.K
	if r.err == nil && precBytes(p) == 0 && lowBits(p) == 0 {
		r.fail("coefficient precision %v", p)
	}
	if r.err != nil {
		return r.err
	}
	s.c = resize(s.c, rows*k)
	if b := lowBits(p); b > 0 {
		return readLowBit(r, s.c, rows, k, b)
	}
	if p != Int8 {
		b := r.take(rows*k*precBytes(p), "coefficients")
		if err := r.done(); err != nil {
			return err
		}
		readValues(s.c, b, p)
		for i, v := range s.c {
			if !isFinite32(v) {
				return fmt.Errorf("%w: coefficient %d is %v", ErrCorrupt, i, v)
			}
		}
		return nil
	}
	scales := r.take(rows*4, "row scales")
	codes := r.take(rows*k, "int8 coefficients")
	if err := r.done(); err != nil {
		return err
	}
	for i := 0; i < rows; i++ {
		sc := getF32(scales[4*i:])
		if !lowScaleOK(sc, 127, k) {
			// Bounded like the sub-byte scales: a huge scale would
			// overflow to ±Inf and Expand would turn that into NaN.
			return fmt.Errorf("%w: row %d scale %v (want 0 ≤ scale·127·k ≤ %g)", ErrCorrupt, i, sc, lowScaleLimit)
		}
		for j := 0; j < k; j++ {
			s.c[i*k+j] = float32(int8(codes[i*k+j])) * sc
		}
	}
	return nil
}
