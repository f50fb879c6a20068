package compression

import (
	"math"
	"sync"
)

// Parametric models of one coefficient dimension's quantization levels, for
// the transform codec's rANS stream. Each message sends one byte per rotated
// dimension naming its model; sender and receiver build the same frequency
// table from that byte alone, so the table costs one byte, not a histogram.
//
// Param byte: 0 means every level of the dimension is 0 (nothing is coded).
// Otherwise bit 7 picks the shape — 0 Laplace, P(n) ∝ θ^|n|; 1 Gaussian,
// P(n) ∝ θ^(n²) — and u = bits 0..6 (1..127) the spread: 1−θ = 2^(−u/8), so
// one step of u changes the scale by 9% (Laplace) or 4.4% (Gaussian std).
//
// Wide dimensions are split: with θ close to 1 the level n is coded as its
// high part n>>s under the model of θ^(2^s) (Laplace) or θ^(4^s) (Gaussian),
// and its s low bits raw, nearly uniform at that width anyway. Levels past
// ±L (where the model's mass is below 2^-18) take an escape symbol, a sign
// bit and an Elias-gamma magnitude, so an outlier costs bits, never a failure.
//
// Determinism: the table must come out bit-identical on every platform. It
// is built from θ = 1 − 2^(−u/8) using the literal constants of tcFrac8 and
// only +, −, ×, ÷ and float64→int truncation, each of which IEEE 754 defines
// exactly (no exp or log, whose last bit differs between math libraries, and
// no expression the compiler could fuse into an FMA: every product feeds a
// separate statement or an explicit float64 conversion).

const (
	tcProbBits = 16
	tcProbM    = 1 << tcProbBits
	// tcMaxL bounds the directly coded levels ±L of a model.
	tcMaxL = 127
	// tcMaxLevel bounds |n| of any level (escapes included): the encoder
	// clamps to it and the decoder refuses more.
	tcMaxLevel = 1 << 26
	// tcGammaBits is the width of an escape's magnitude length field.
	tcGammaBits = 5
)

// tcFrac8[i] = 2^(−i/8), as exact float64 literals.
var tcFrac8 = [8]float64{
	1,
	0.91700404320467122,
	0.84089641525371450,
	0.77110541270397037,
	0.70710678118654757,
	0.64841977732550482,
	0.59460355750136051,
	0.54525386633262884,
}

// tcModel is one frequency table: levels −L..L at indices 0..2L, the escape
// at 2L+1, cum[i] = Σ freq[<i] (cum[2L+2] = tcProbM).
type tcModel struct {
	shift uint8 // low bits sent raw
	L     int
	freq  []uint32
	cum   []uint32
	// cost[i] = −log2(freq[i]/M) in bits: the encoder's estimate when it
	// picks a model (encoder-only, so it need not be deterministic).
	cost []float32
}

var (
	tcModelsOnce sync.Once
	tcModels     [256]*tcModel // index = param byte; [0] and invalid ones nil
)

// tcModelFor returns the table of param p, or nil for 0 and invalid bytes
// (none: every other byte is valid).
func tcModelFor(p byte) *tcModel {
	tcModelsOnce.Do(func() {
		for i := 1; i < 256; i++ {
			if i&127 == 0 {
				continue
			}
			tcModels[i] = buildTCModel(byte(i))
		}
	})
	return tcModels[p]
}

func buildTCModel(p byte) *tcModel {
	gauss := p&0x80 != 0
	u := int(p & 127)
	oneMinus := tcFrac8[u%8]
	for i := 0; i < u/8; i++ {
		oneMinus *= 0.5 // exact
	}
	theta := 1 - oneMinus
	// Split wide dimensions: the Laplace scale ≈ 1/(1−θ), the Gaussian
	// variance ≈ 1/(2(1−θ)); keep them ≲ 12 levels wide.
	m := &tcModel{}
	for {
		var wide bool
		if gauss {
			wide = 1-theta < 1.0/288
		} else {
			wide = 1-theta < 1.0/12
		}
		if !wide || m.shift >= 24 {
			break
		}
		m.shift++
		theta *= theta
		if gauss {
			theta *= theta
		}
	}
	// Weights w[n] for n = 0..L of P(n) ∝ θ^|n| or θ^(n²), by repeated
	// multiplication; L is where w drops below 2^-18.
	w := make([]float64, 0, tcMaxL+2)
	w = append(w, 1)
	step := theta // θ^(2n+1) for the Gaussian, θ for the Laplace
	for len(w) <= tcMaxL {
		next := w[len(w)-1] * step
		if gauss {
			step = step * theta
			step = step * theta
		}
		if next < 1.0/(1<<18) {
			break
		}
		w = append(w, next)
	}
	L := len(w) - 1
	L = max(L, 1)
	for len(w) <= L {
		w = append(w, 0)
	}
	total := w[0]
	for n := 1; n <= L; n++ {
		total += 2 * w[n]
	}
	// Escape mass: the Laplace tail beyond L is 2θ^(L+1)/(1−θ); the same
	// bound is used for the Gaussian, whose tail is lighter.
	tail := 2 * (w[L] * theta) / (1 - theta)
	total += tail
	nsym := 2*L + 2
	budget := float64(tcProbM - nsym) // every symbol keeps at least 1
	m.L = L
	m.freq = make([]uint32, nsym)
	var sum uint32
	for i := range nsym - 1 {
		n := i - L
		if n < 0 {
			n = -n
		}
		share := w[n] / total
		f := 1 + uint32(share*budget)
		m.freq[i] = f
		sum += f
	}
	m.freq[nsym-1] = 1 + uint32(tail/total*budget)
	sum += m.freq[nsym-1]
	m.freq[L] += tcProbM - sum // rounding leftovers go to level 0
	m.cum = make([]uint32, nsym+1)
	m.cost = make([]float32, nsym)
	for i, f := range m.freq {
		m.cum[i+1] = m.cum[i] + f
		m.cost[i] = float32(tcProbBits - math.Log2(float64(f)))
	}
	return m
}

// find returns the symbol index whose [cum[i], cum[i+1]) holds slot.
func (m *tcModel) find(slot uint32) int {
	lo, hi := 0, len(m.freq)-1
	for lo < hi {
		mid := int(uint(lo+hi+1) >> 1)
		if m.cum[mid] <= slot {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// levelCost is the encoder's estimate of the bits level n costs.
func (m *tcModel) levelCost(n int32) float32 {
	hi := n >> m.shift
	c := float32(m.shift)
	if hi >= -int32(m.L) && hi <= int32(m.L) {
		return c + m.cost[int(hi)+m.L]
	}
	a := hi
	if a < 0 {
		a = -a
	}
	v := uint32(a) - uint32(m.L)
	nb := bitLen32(v)
	return c + m.cost[2*m.L+1] + 1 + tcGammaBits + float32(nb-1)
}

func bitLen32(v uint32) int {
	n := 0
	for v != 0 {
		n++
		v >>= 1
	}
	return n
}

// appendLevel appends the rANS events of level n under m.
func (m *tcModel) appendLevel(syms []ransSym, n int32) []ransSym {
	hi := n >> m.shift // arithmetic: floor(n / 2^shift)
	lo := uint32(n - hi<<m.shift)
	if hi >= -int32(m.L) && hi <= int32(m.L) {
		i := int(hi) + m.L
		syms = append(syms, ransSym{start: m.cum[i], freq: m.freq[i], bits: tcProbBits})
	} else {
		e := 2*m.L + 1
		syms = append(syms, ransSym{start: m.cum[e], freq: m.freq[e], bits: tcProbBits})
		var sign uint32
		a := hi
		if a < 0 {
			sign, a = 1, -a
		}
		v := uint32(a) - uint32(m.L) // ≥ 1
		nb := bitLen32(v)
		syms = append(syms, ransSym{start: sign, freq: 1, bits: 1},
			ransSym{start: uint32(nb), freq: 1, bits: tcGammaBits})
		if nb > 1 {
			syms = append(syms, ransSym{start: v & (1<<(nb-1) - 1), freq: 1, bits: uint8(nb - 1)})
		}
	}
	if m.shift > 0 {
		syms = append(syms, ransSym{start: lo, freq: 1, bits: m.shift})
	}
	return syms
}

// readLevel decodes one level under m; ok is false on a malformed escape.
func (m *tcModel) readLevel(d *ransDec) (int32, bool) {
	i := m.find(d.peek(tcProbBits))
	d.advance(m.cum[i], m.freq[i], tcProbBits)
	var hi int32
	if i <= 2*m.L {
		hi = int32(i - m.L)
	} else {
		sign := d.raw(1)
		nb := d.raw(tcGammaBits)
		if nb < 1 || nb > 27 {
			return 0, false
		}
		v := uint32(1)<<(nb-1) | d.raw(uint8(nb-1))
		a := int64(v) + int64(m.L)
		if a<<m.shift > tcMaxLevel {
			return 0, false
		}
		hi = int32(a)
		if sign == 1 {
			hi = -hi
		}
	}
	lo := d.raw(m.shift)
	n := int64(hi)<<m.shift + int64(lo)
	if n > tcMaxLevel || n < -tcMaxLevel {
		return 0, false
	}
	return int32(n), true
}

// tcFitParam picks the param byte whose model codes the levels col (one
// dimension of a message) in the fewest bits: maximum-likelihood θ for
// both shapes, then the exact cost of the neighbouring u values.
func tcFitParam(col []int32) byte {
	var sa, s2 float64
	allZero := true
	for _, n := range col {
		f := float64(n)
		sa += math.Abs(f)
		s2 += f * f
		allZero = allZero && n == 0
	}
	if allZero {
		return 0
	}
	cnt := float64(len(col))
	mabs, msq := sa/cnt, s2/cnt
	// Two-sided geometric: E|n| = 2θ/(1−θ²) → θ = (√(1+m²)−1)/m.
	thL := (math.Sqrt(1+mabs*mabs) - 1) / mabs
	// Discrete Gaussian θ^(n²) ≈ exp(−n²/(2σ²)).
	thG := math.Exp(-1 / (2 * max(msq, 1e-3)))
	best, bestCost := byte(1), float32(math.Inf(1))
	for _, c := range [2]struct {
		theta float64
		flag  byte
	}{{thL, 0}, {thG, 0x80}} {
		u0 := int(math.Round(-8 * math.Log2(max(1-c.theta, 1e-12))))
		for u := u0 - 1; u <= u0+1; u++ {
			uu := byte(min(127, max(1, u)))
			m := tcModelFor(uu | c.flag)
			var cost float32
			for _, n := range col {
				cost += m.levelCost(n)
			}
			if cost < bestCost {
				best, bestCost = uu|c.flag, cost
			}
		}
	}
	return best
}
