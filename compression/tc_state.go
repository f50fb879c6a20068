package compression

import (
	"encoding/binary"
	"fmt"
	"math"
)

// tcState is the cross-message state of one end of a transform-coded link.
// Both ends of a link hold equal tcStates after every message (the sender's
// cov, which only RotationSent uses, excepted: it is the sender's own).
type tcState struct {
	k, vocab int
	dir      Direction
	o        TCOptions
	seed     uint64 // digest of the fixed parts (subspace, options)

	msgs   uint64 // messages coded since Reset
	digest uint64 // chains everything that changed the state

	pred []float32 // vocab×k: running mean of decoded ĉ per id
	seen []uint32  // vocab: rows seen per id (saturating)
	ppos []float32 // period×k: running mean of ĉ − pred[id] per position (Period > 0)
	pseq []uint32  // period: rows seen per position

	rot   []float64 // k×k column-major (rot[l*k+j]: component j of axis l); nil = identity
	cz    []float64 // derived: Σ ẑẑᵀ in the current rotated coordinates (upper triangle)
	cov   []float64 // sent (sender only): Σ rrᵀ of true residuals
	prevC []float64 // the covariance behind the last rotation, halved into the next

	idCount []uint32 // vocab: order-0 counts of sent ids
	idTotal uint64
	// Order-1 counts (vocab ≤ tcOrder1Vocab): ctxCount[prev*vocab+id],
	// ctxTotal[prev]. Text is far more predictable from the previous token
	// (byte-level Go source: ~5 bits order-0).
	ctxCount []uint32
	ctxTotal []uint32

	// per-message cache of the id tables by context (not state)
	tabs   [][]uint32
	tabGen []uint64
	gen    uint64
}

// tcOrder1Vocab bounds the vocabulary for which ids get an order-1 model
// (its counts are vocab² words: 4 MiB at 1024).
const tcOrder1Vocab = 1024

func (s *tcState) init(sub *Subspace, dir Direction, o TCOptions) {
	k, V := sub.Basis.K, sub.Vocab
	*s = tcState{k: k, vocab: V, dir: dir, o: o}
	h := uint64(0x6e62746376310000) // "nbtcv1"
	for _, w := range []uint64{uint64(dir), uint64(k), uint64(sub.Basis.D), uint64(V), uint64(o.Rotation),
		uint64(o.RotationInterval), math.Float64bits(o.PredictorDecay), uint64(o.Period)} {
		h = mix64(h, w)
	}
	for _, v := range sub.Basis.U[:min(64, len(sub.Basis.U))] {
		h = mix64(h, uint64(math.Float32bits(v)))
	}
	for _, v := range sub.E0[:min(64, len(sub.E0))] {
		h = mix64(h, uint64(math.Float32bits(v)))
	}
	s.seed, s.digest = h, h
	if o.PredictorDecay > 0 {
		s.pred = make([]float32, V*k)
		s.seen = make([]uint32, V)
		if o.Period > 0 {
			s.ppos = make([]float32, o.Period*k)
			s.pseq = make([]uint32, o.Period)
		}
	}
	switch o.Rotation {
	case RotationDerived:
		s.cz = make([]float64, k*k)
		s.prevC = make([]float64, k*k)
	case RotationSent:
		s.cov = make([]float64, k*k)
		s.prevC = make([]float64, k*k)
	}
	s.idCount = make([]uint32, V)
	if V <= tcOrder1Vocab {
		s.ctxCount = make([]uint32, V*V)
		s.ctxTotal = make([]uint32, V)
	}
}

func mix64(h, w uint64) uint64 {
	h ^= w
	h *= 0x9e3779b97f4a7c15
	return h ^ h>>29
}

func (s *tcState) hashF64(v []float64) {
	for _, x := range v {
		s.digest = mix64(s.digest, math.Float64bits(x))
	}
}

// refreshDue says whether the rotation is refitted after msgs messages:
// after 1, 2, 4, … while below the interval n, then every n.
func refreshDue(msgs uint64, n int) bool {
	if msgs == 0 {
		return false
	}
	if msgs%uint64(n) == 0 {
		return true
	}
	return msgs < uint64(n) && msgs&(msgs-1) == 0
}

// advance folds one coded message (levels in c.lv, decoded coefficients in
// c.chat) into the state, identically on both ends.
func (s *tcState) advance(c *tcCore, flags byte, ids []int32, delta float32, rows int) {
	k := s.k
	h := mix64(s.digest, s.msgs)
	h = mix64(h, uint64(flags)|uint64(rows)<<8)
	h = mix64(h, uint64(math.Float32bits(delta)))
	for _, t := range ids {
		h = mix64(h, uint64(uint32(t)))
	}
	for i := 0; i+1 < len(c.chat); i += 2 {
		h = mix64(h, uint64(math.Float32bits(c.chat[i]))|uint64(math.Float32bits(c.chat[i+1]))<<32)
	}
	if len(c.chat)%2 == 1 {
		h = mix64(h, uint64(math.Float32bits(c.chat[len(c.chat)-1])))
	}
	s.digest = h

	// Predictor: all rows were predicted from the state before the
	// message, so update only now, in row order.
	// With a position predictor the two are fitted as an additive model:
	// each moves toward what the other leaves of ĉ (both read before
	// either moves).
	if s.pred != nil {
		floor := float32(s.o.PredictorDecay)
		weight := func(n *uint32) float32 {
			a := float32(1 / float64(*n+1))
			if a < floor {
				a = floor
			}
			if *n < math.MaxUint32 {
				*n++
			}
			return a
		}
		for i, t := range ids {
			a := weight(&s.seen[t])
			p := s.pred[int(t)*k : (int(t)+1)*k]
			ch := c.chat[i*k : (i+1)*k]
			if s.ppos == nil {
				for j, v := range ch {
					p[j] += float32(a * (v - p[j]))
				}
				continue
			}
			pos := i % s.o.Period
			b := weight(&s.pseq[pos])
			pp := s.ppos[pos*k : (pos+1)*k]
			for j, v := range ch {
				et := v - pp[j] - p[j] // what the token mean misses
				p[j] += float32(a * et)
				pp[j] += float32(b * et)
			}
		}
	}
	if flags&tcFlagIDs != 0 {
		for _, t := range ids {
			s.idCount[t]++
		}
		s.idTotal += uint64(len(ids))
		if s.ctxCount != nil {
			V := s.vocab
			for i := 1; i < len(ids); i++ {
				c := int(ids[i-1])
				s.ctxCount[c*V+int(ids[i])]++
				s.ctxTotal[c]++
				if s.ctxTotal[c] > 1<<16 {
					s.ctxTotal[c] = 0
					row := s.ctxCount[c*V : (c+1)*V]
					for j, n := range row {
						row[j] = (n + 1) >> 1
						s.ctxTotal[c] += row[j]
					}
				}
			}
		}
		if s.idTotal > 1<<20 {
			s.idTotal = 0
			for i, n := range s.idCount {
				s.idCount[i] = (n + 1) >> 1
				s.idTotal += uint64(s.idCount[i])
			}
		}
	}
	if s.o.Rotation == RotationDerived {
		dl := float64(delta)
		nz := make([]int, 0, k)
		for i := 0; i < rows; i++ {
			lv := c.lv[i*k : (i+1)*k]
			nz = nz[:0]
			for l, q := range lv {
				if q != 0 {
					nz = append(nz, l)
				}
			}
			for x, a := range nz {
				za := float64(float64(lv[a]) * dl)
				for _, b := range nz[x:] {
					zb := float64(float64(lv[b]) * dl)
					s.cz[a*k+b] += float64(za * zb)
				}
			}
		}
	}
	s.msgs++
	if s.o.Rotation == RotationDerived && refreshDue(s.msgs, s.o.RotationInterval) {
		s.refitDerived()
	}
}

// refitDerived turns the accumulated Σẑẑᵀ back to the coefficient axes,
// C = R·Cz·Rᵀ + ½·prevC, and takes its eigenvectors as the new rotation.
func (s *tcState) refitDerived() {
	k := s.k
	cz := s.cz
	for a := 0; a < k; a++ { // symmetrize the upper triangle
		for b := a + 1; b < k; b++ {
			cz[b*k+a] = cz[a*k+b]
		}
	}
	if s.rot == nil {
		for i := range cz {
			cz[i] += float64(0.5 * s.prevC[i])
		}
		copy(s.prevC, cz)
		s.rot = eigenRotation(cz, nil, k)
		clear(s.cz)
		s.hashF64(s.rot)
		return
	}
	// Work in the current rotated coordinates, where C is nearly diagonal
	// already, so Jacobi needs a few sweeps instead of many:
	// C' = Cz + ½·Rᵀ·prevC·R, C' = V'ΛV'ᵀ, new R = R·V'. prevC (in the
	// coefficient axes) becomes R·C'·Rᵀ.
	R := s.rot // column-major: R[j][l] = R[l*k+j]
	T := make([]float64, k*k)
	Cp := make([]float64, k*k)
	// T = prevC·R, then Cp = Rᵀ·T.
	for j := 0; j < k; j++ {
		for l := 0; l < k; l++ {
			var v float64
			for m := 0; m < k; m++ {
				v += float64(s.prevC[j*k+m] * R[l*k+m])
			}
			T[j*k+l] = v
		}
	}
	for a := 0; a < k; a++ {
		for b := 0; b < k; b++ {
			var v float64
			for j := 0; j < k; j++ {
				v += float64(R[a*k+j] * T[j*k+b])
			}
			Cp[a*k+b] = float64(0.5*v) + cz[a*k+b]
		}
	}
	// prevC = R·Cp·Rᵀ: T = R·Cp, then prevC = T·Rᵀ.
	for j := 0; j < k; j++ {
		for b := 0; b < k; b++ {
			var v float64
			for a := 0; a < k; a++ {
				v += float64(R[a*k+j] * Cp[a*k+b])
			}
			T[j*k+b] = v
		}
	}
	for j := 0; j < k; j++ {
		for i := 0; i < k; i++ {
			var v float64
			for b := 0; b < k; b++ {
				v += float64(T[j*k+b] * R[b*k+i])
			}
			s.prevC[j*k+i] = v
		}
	}
	Vp := eigenRotation(Cp, nil, k) // column-major: Vp[l*k+a]
	nr := make([]float64, k*k)
	for l := 0; l < k; l++ {
		for j := 0; j < k; j++ {
			var v float64
			for a := 0; a < k; a++ {
				v += float64(R[a*k+j] * Vp[l*k+a])
			}
			nr[l*k+j] = v
		}
	}
	s.rot = nr
	clear(s.cz)
	s.hashF64(s.rot)
}

// eigenRotation returns the column-major rotation to C's principal axes
// (C is overwritten), reusing buf.
func eigenRotation(C, buf []float64, k int) []float64 {
	v := make([]float64, k*k)
	jacobiEigen(C, v, k)
	buf = resizeF64(buf, k*k)
	for l := 0; l < k; l++ {
		for j := 0; j < k; j++ {
			buf[l*k+j] = v[j*k+l]
		}
	}
	return buf
}

// accumulateTrue adds rᵀr of the sender's true residuals (rows×k) for a
// sent rotation.
func (s *tcState) accumulateTrue(r []float32, rows int) {
	k := s.k
	t := make([]float32, k*k)
	mulAtB(t, r, r, rows, k, k)
	for i, v := range t {
		s.cov[i] += float64(v)
	}
}

// fitRotation is the sent mode's refit from the sender's covariance.
func (s *tcState) fitRotation(buf []float64) []float64 {
	C := make([]float64, len(s.cov))
	for i := range C {
		C[i] = s.cov[i] + 0.5*s.prevC[i]
	}
	copy(s.prevC, C)
	clear(s.cov)
	return eigenRotation(C, buf, s.k)
}

// idBits is the precision of the id model: at least 32 slots per id.
func (s *tcState) idBits() uint8 {
	return uint8(min(31, max(16, bitLen32(uint32(s.vocab))+5)))
}

// idStart begins a message's id coding: tables built for the last message
// are stale (the counts moved).
func (s *tcState) idStart() { s.gen++ }

// idTable returns the id model after previous id prev (−1: none, or no
// order-1 model), built once per message and context.
func (s *tcState) idTable(prev int32) []uint32 {
	V := s.vocab
	if s.ctxCount == nil || prev < 0 {
		prev = int32(V)
	}
	if s.tabs == nil {
		n := 1
		if s.ctxCount != nil {
			n = V + 1
		}
		s.tabs, s.tabGen = make([][]uint32, n), make([]uint64, n)
	}
	slot := int(prev)
	if s.ctxCount == nil {
		slot = 0
	}
	if s.tabGen[slot] != s.gen || s.tabs[slot] == nil {
		s.tabs[slot] = s.idModel(s.tabs[slot], int(prev))
		s.tabGen[slot] = s.gen
	}
	return s.tabs[slot]
}

// idModel returns the cumulative frequencies (len vocab+1, total 2^idBits)
// of the id model, every id at least 1: by order-0 counts for prev = vocab,
// else the order-1 counts after prev blended with the order-0 estimate,
// P = (n(id|prev) + 4·P0(id)) / (n(prev) + 4), P0(id) = (n(id)+1)/(N+V),
// in integers (scaled by (n(prev)+4)(N+V)), so both ends agree exactly.
func (s *tcState) idModel(cum []uint32, prev int) []uint32 {
	V := s.vocab
	M := uint64(1) << s.idBits()
	budget := M - uint64(V)
	if cap(cum) < V+1 {
		cum = make([]uint32, V+1)
	}
	cum = cum[:V+1]
	var sum uint64
	best := 0
	if prev < V {
		row := s.ctxCount[prev*V : (prev+1)*V]
		n0 := s.idTotal + uint64(V)
		var tot uint64
		for i, n := range row {
			tot += uint64(n)*n0 + 4*(uint64(s.idCount[i])+1)
		}
		var bestScore uint64
		for i, n := range row {
			score := uint64(n)*n0 + 4*(uint64(s.idCount[i])+1)
			f := 1 + score*budget/tot
			cum[i+1] = uint32(f)
			sum += f
			if score > bestScore {
				best, bestScore = i, score
			}
		}
		cum[best+1] += uint32(M - sum)
		cum[0] = 0
		for i := 1; i <= V; i++ {
			cum[i] += cum[i-1]
		}
		return cum
	}
	for i, n := range s.idCount {
		var f uint64
		if s.idTotal == 0 {
			f = 1 + budget/uint64(V)
		} else {
			f = 1 + uint64(n)*budget/s.idTotal
		}
		cum[i+1] = uint32(f) // frequencies first, prefix sums below
		sum += f
		if n > s.idCount[best] {
			best = i
		}
	}
	cum[best+1] += uint32(M - sum)
	cum[0] = 0
	for i := 1; i <= V; i++ {
		cum[i] += cum[i-1]
	}
	return cum
}

// Snapshot layout: "NBTC", u8 version 1, u8 direction, u8 rotation mode,
// u32 k, u32 vocab, u64 fixed-part digest, u64 msgs, u64 digest, u64
// idTotal, then each array as a u32 length (0 where this mode has none)
// and its little-endian values: pred (f32), seen (u32), ppos (f32), pseq
// (u32), rot (f64), cz (f64), cov (f64), prevC (f64), idCount (u32),
// ctxCount (u32), ctxTotal (u32).
const tcSnapMagic = "NBTC\x01"

func (s *tcState) snapshot() []byte {
	b := append([]byte(nil), tcSnapMagic...)
	b = append(b, byte(s.dir), byte(s.o.Rotation))
	b = binary.LittleEndian.AppendUint32(b, uint32(s.k))
	b = binary.LittleEndian.AppendUint32(b, uint32(s.vocab))
	for _, v := range []uint64{s.seed, s.msgs, s.digest, s.idTotal} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.pred)))
	for _, v := range s.pred {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	b = appendU32s(b, s.seen)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.ppos)))
	for _, v := range s.ppos {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	b = appendU32s(b, s.pseq)
	for _, a := range [][]float64{s.rot, s.cz, s.cov, s.prevC} {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(a)))
		for _, v := range a {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
	}
	b = appendU32s(b, s.idCount)
	b = appendU32s(b, s.ctxCount)
	return appendU32s(b, s.ctxTotal)
}

func appendU32s(b []byte, a []uint32) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(a)))
	for _, v := range a {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

func (s *tcState) restore(b []byte) error {
	bad := func(what string) error {
		return fmt.Errorf("%w: subspace-tc snapshot: %s", ErrCorrupt, what)
	}
	r := reader{b: b}
	if string(r.take(len(tcSnapMagic), "magic")) != tcSnapMagic {
		return bad("not a version-1 snapshot")
	}
	hdr := r.take(2+4+4+32, "header")
	if r.err != nil {
		return bad(r.err.Error())
	}
	if Direction(hdr[0]) != s.dir || Rotation(hdr[1]) != s.o.Rotation ||
		binary.LittleEndian.Uint32(hdr[2:]) != uint32(s.k) || binary.LittleEndian.Uint32(hdr[6:]) != uint32(s.vocab) ||
		binary.LittleEndian.Uint64(hdr[10:]) != s.seed {
		return bad("taken from a coder of another direction, subspace or options")
	}
	n := *s
	n.msgs = binary.LittleEndian.Uint64(hdr[18:])
	n.digest = binary.LittleEndian.Uint64(hdr[26:])
	n.idTotal = binary.LittleEndian.Uint64(hdr[34:])
	// array reads a length-prefixed array of want 4-byte values.
	array := func(want int) ([]byte, bool) {
		l := int(binary.LittleEndian.Uint32(r.take(4, "length")))
		if r.err == nil && l != want {
			r.fail("array of %d, want %d", l, want)
		}
		raw := r.take(4*want, "values")
		return raw, r.err == nil
	}
	f32s := func(want int) []float32 {
		raw, ok := array(want)
		if !ok {
			return nil
		}
		out := make([]float32, want)
		for i := range out {
			out[i] = getF32(raw[4*i:])
			if !(math.Abs(float64(out[i])) <= tcLimit) {
				r.fail("value out of range")
			}
		}
		return out
	}
	u32s := func(want int) []uint32 {
		raw, ok := array(want)
		if !ok {
			return nil
		}
		out := make([]uint32, want)
		for i := range out {
			out[i] = binary.LittleEndian.Uint32(raw[4*i:])
		}
		return out
	}
	f64s := func(allowed ...int) []float64 {
		if r.err != nil {
			return nil
		}
		l := int(binary.LittleEndian.Uint32(r.take(4, "length")))
		ok := false
		for _, a := range allowed {
			ok = ok || l == a
		}
		if r.err == nil && !ok {
			r.fail("array of %d", l)
		}
		raw := r.take(8*l, "values")
		if r.err != nil || l == 0 {
			return nil
		}
		out := make([]float64, l)
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
			if !(math.Abs(out[i]) <= 1e300) {
				r.fail("value out of range")
			}
		}
		return out
	}
	kk := s.k * s.k
	n.pred = f32s(len(s.pred))
	n.seen = u32s(len(s.seen))
	n.ppos = f32s(len(s.ppos))
	n.pseq = u32s(len(s.pseq))
	if s.o.Rotation == RotationOff {
		n.rot = f64s(0)
	} else {
		n.rot = f64s(0, kk)
	}
	n.cz = f64s(len(s.cz))
	n.cov = f64s(len(s.cov))
	n.prevC = f64s(len(s.prevC))
	n.idCount = u32s(len(s.idCount))
	n.ctxCount = u32s(len(s.ctxCount))
	n.ctxTotal = u32s(len(s.ctxTotal))
	n.tabs, n.tabGen = nil, nil
	if err := r.done(); err != nil {
		return bad(err.Error())
	}
	if len(s.pred) == 0 {
		n.pred, n.seen = nil, nil
	}
	if len(s.ppos) == 0 {
		n.ppos, n.pseq = nil, nil
	}
	var tot uint64
	for _, c := range n.idCount {
		tot += uint64(c)
	}
	if tot != n.idTotal {
		return bad("id counts do not add up")
	}
	for c, want := range n.ctxTotal {
		var t uint64
		for _, x := range n.ctxCount[c*s.vocab : (c+1)*s.vocab] {
			t += uint64(x)
		}
		if t != uint64(want) || t > 1<<17 {
			return bad("order-1 id counts do not add up")
		}
	}
	if n.idTotal > 1<<21 {
		return bad("id total out of range")
	}
	*s = n
	return nil
}
