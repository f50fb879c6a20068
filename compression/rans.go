package compression

import "encoding/binary"

// rANS (range asymmetric numeral systems, J. Duda 2013) with a 64-bit state
// and 32-bit renormalization, after F. Giesen's public-domain rans64.h. The
// transform codec (codec_subspace_tc.go) codes every symbol of a message —
// token ids, coefficient levels, escape bits — into one stream. rANS is last
// in, first out, so the encoder collects the symbols first and codes them
// backwards; the decoder then reads them in message order.
//
// Stream layout: the final encoder state (8 bytes, little-endian), then the
// renormalization words (4 bytes each, little-endian) in the order the
// decoder reads them. A valid stream leaves the decoder in state ransL with
// every word consumed, which checks the stream's integrity for free.

// ransL is the lower bound of the normalized state interval [L, 2^64).
const ransL = 1 << 31

// ransSym is one coded event: a symbol of probability freq/2^bits whose
// cumulative frequency is start (bits ≤ 31, freq ≥ 1, start+freq ≤ 2^bits).
// A raw n-bit value v is the symbol start = v, freq = 1, bits = n.
type ransSym struct {
	start, freq uint32
	bits        uint8
}

// ransEncode appends the rANS stream of syms (coded in reverse, decoded in
// order) to dst. words is scratch.
func ransEncode(dst []byte, syms []ransSym, words *[]uint32) []byte {
	x := uint64(ransL)
	w := (*words)[:0]
	for i := len(syms) - 1; i >= 0; i-- {
		s := syms[i]
		f := uint64(s.freq)
		// The state after coding must stay below 2^64: renormalize first.
		if x >= ((ransL>>s.bits)<<32)*f {
			w = append(w, uint32(x))
			x >>= 32
		}
		x = (x/f)<<s.bits + x%f + uint64(s.start)
	}
	*words = w
	dst, out := grow(dst, 8+4*len(w))
	binary.LittleEndian.PutUint64(out, x)
	for i := range w {
		// The decoder reads the last word the encoder wrote first.
		binary.LittleEndian.PutUint32(out[8+4*i:], w[len(w)-1-i])
	}
	return dst
}

// ransDec decodes a stream. It never panics on hostile bytes: running out of
// words sets bad, and end reports whether the stream closed exactly.
type ransDec struct {
	x   uint64
	b   []byte
	bad bool
}

func newRansDec(b []byte) ransDec {
	if len(b) < 8 || len(b)%4 != 0 {
		return ransDec{bad: true}
	}
	return ransDec{x: binary.LittleEndian.Uint64(b), b: b[8:]}
}

// peek returns the cumulative-frequency slot of the next symbol of a model
// with 2^bits total.
func (d *ransDec) peek(bits uint8) uint32 { return uint32(d.x & (1<<bits - 1)) }

// advance consumes the symbol (start, freq) that peek's slot fell into. The
// caller guarantees start ≤ slot < start+freq and freq ≤ 2^bits, so the
// state only shrinks and cannot overflow.
func (d *ransDec) advance(start, freq uint32, bits uint8) {
	d.x = uint64(freq)*(d.x>>bits) + d.x&(1<<bits-1) - uint64(start)
	if d.x < ransL {
		if len(d.b) < 4 {
			d.bad = true
			d.x = ransL // keep decoding harmlessly; the caller checks bad
			return
		}
		d.x = d.x<<32 | uint64(binary.LittleEndian.Uint32(d.b))
		d.b = d.b[4:]
	}
}

// raw decodes a raw value of n ≤ 31 bits.
func (d *ransDec) raw(n uint8) uint32 {
	if n == 0 {
		return 0
	}
	v := d.peek(n)
	d.advance(v, 1, n)
	return v
}

// end reports whether the stream was well formed and fully consumed.
func (d *ransDec) end() bool { return !d.bad && len(d.b) == 0 && d.x == ransL }
