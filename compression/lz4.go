package compression

import (
	"encoding/binary"
	"fmt"

	"github.com/pierrec/lz4/v4"
)

// lz4 as an optional lossless last step. Raw float bytes do not compress
// (ratio ≈ 0.996 measured); splitting them into byte planes first (all first
// bytes, then all second bytes, … as Blosc does) groups the sign/exponent
// bytes, which repeat a lot, so the planes compress a little. Compress keeps
// the result only if it is strictly smaller, and says so.
//
// Packed format: u8 element size (1, 2 or 4; 1 = no shuffle), uvarint raw
// length, then one lz4 block.

// Compress appends the lz4 packing of payload to dst, shuffling bytes in
// planes of elemSize (4 for float32 values, 2 for 16-bit, 1 for none). If
// packing does not shrink the payload it appends payload unchanged and
// returns applied=false; the caller must put applied into the frame header.
func Compress(dst, payload []byte, elemSize int) (out []byte, applied bool) {
	if elemSize != 2 && elemSize != 4 {
		elemSize = 1
	}
	src := payload
	if elemSize > 1 {
		src = make([]byte, len(payload))
		shuffle(src, payload, elemSize)
	}
	hdr := 1 + binary.PutUvarint(make([]byte, binary.MaxVarintLen64), uint64(len(payload)))
	bound := lz4.CompressBlockBound(len(src))
	start := len(dst)
	dst, w := grow(dst, hdr+bound)
	w[0] = byte(elemSize)
	binary.PutUvarint(w[1:], uint64(len(payload)))
	var c lz4.Compressor
	n, err := c.CompressBlock(src, w[hdr:])
	if err != nil || n == 0 || hdr+n >= len(payload) {
		// lz4 reports n == 0 for incompressible input; any error means the
		// same to us: send it raw.
		return append(dst[:start], payload...), false
	}
	return dst[:start+hdr+n], true
}

// Decompress appends the payload packed by Compress to dst. maxLen bounds the
// unpacked length (use the codec's MaxEncodedLen) so hostile bytes cannot make
// it allocate more.
func Decompress(dst, packed []byte, maxLen int) ([]byte, error) {
	r := reader{b: packed}
	es := int(r.byte("element size"))
	n := r.uvarint("raw length", maxLen)
	if r.err == nil && es != 1 && es != 2 && es != 4 {
		r.fail("element size %d", es)
	}
	if r.err == nil && n == 0 {
		// Compress never packs an empty payload, and lz4 v4.1.33's
		// assembly decoder dereferences nil on an empty destination.
		r.fail("empty packed payload")
	}
	if r.err != nil {
		return dst, fmt.Errorf("lz4: %w", r.err)
	}
	start := len(dst)
	dst, w := grow(dst, n)
	buf := w
	if es > 1 {
		buf = make([]byte, n)
	}
	got, err := lz4.UncompressBlock(r.b, buf)
	if err != nil || got != n {
		return dst[:start], fmt.Errorf("lz4: %w: block decodes to %d bytes, header says %d (%v)", ErrCorrupt, got, n, err)
	}
	if es > 1 {
		unshuffle(w, buf, es)
	}
	return dst, nil
}

// shuffle writes src's bytes to dst grouped by position within each
// elemSize-byte element; a tail shorter than one element is copied as is.
func shuffle(dst, src []byte, es int) {
	ne := len(src) / es
	for i := 0; i < ne; i++ {
		for b := 0; b < es; b++ {
			dst[b*ne+i] = src[i*es+b]
		}
	}
	copy(dst[ne*es:], src[ne*es:])
}

func unshuffle(dst, src []byte, es int) {
	ne := len(src) / es
	for i := 0; i < ne; i++ {
		for b := 0; b < es; b++ {
			dst[i*es+b] = src[b*ne+i]
		}
	}
	copy(dst[ne*es:], src[ne*es:])
}

// LinkCodec is a Codec plus the optional lz4 step: what one link direction
// runs. The lz4 flag it returns goes into the frame header.
type LinkCodec struct {
	Codec Codec
	// LZ4 tries lz4 over the payload and keeps it only when it shrinks.
	LZ4 bool
	// ElemSize is the shuffle plane width for lz4 (see ShuffleWidth).
	ElemSize int

	scratch []byte
}

// ShuffleWidth is the byte-plane width that suits a codec's payload for lz4:
// the width of its dominant value type.
func ShuffleWidth(c Codec, p Precision) int {
	switch c.ID() {
	case IDNone:
		return 4
	case IDFP16, IDBF16:
		return 2
	case IDInt8:
		return 1
	}
	switch p {
	case FP32:
		return 4
	case FP16, BF16:
		return 2
	}
	return 1
}

// Encode appends the payload for x to dst and reports whether lz4 was applied.
func (l *LinkCodec) Encode(dst []byte, x []float32, rows, cols int) ([]byte, bool, error) {
	if !l.LZ4 {
		out, err := l.Codec.Encode(dst, x, rows, cols)
		return out, false, err
	}
	var err error
	l.scratch, err = l.Codec.Encode(l.scratch[:0], x, rows, cols)
	if err != nil {
		return dst, false, err
	}
	out, applied := Compress(dst, l.scratch, l.ElemSize)
	return out, applied, nil
}

// Decode reconstructs x from a payload; lz4Applied is the frame header flag.
func (l *LinkCodec) Decode(dst []float32, payload []byte, lz4Applied bool, rows, cols int) error {
	if !lz4Applied {
		return l.Codec.Decode(dst, payload, rows, cols)
	}
	if err := checkShape(len(dst), rows, cols); err != nil {
		return fmt.Errorf("%v: decode: %w", l.Codec.ID(), err)
	}
	var err error
	l.scratch, err = Decompress(l.scratch[:0], payload, l.Codec.MaxEncodedLen(rows, cols))
	if err != nil {
		return fmt.Errorf("%v: %w", l.Codec.ID(), err)
	}
	return l.Codec.Decode(dst, l.scratch, rows, cols)
}
