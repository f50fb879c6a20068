package compression

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/pierrec/lz4/v4"
)

// lz4 as an optional lossless last step. Raw float bytes do not compress
// (ratio ≈ 0.996 measured); splitting them into byte planes first (all first
// bytes, then all second bytes, … as Blosc does) puts the sign/exponent bytes,
// which repeat a lot, into a plane of their own. Each plane is compressed as
// its own lz4 block and stored raw when lz4 does not shrink it: one block
// over all planes does not work, because lz4's skip-ahead on incompressible
// input (the low mantissa planes come first) jumps over the compressible
// plane. Compress keeps the result only if it is strictly smaller overall,
// and says so.
//
// Packed format: u8 element size (1, 2 or 4; 1 = no shuffle), uvarint raw
// length, then per plane: uvarint packed length (0 = stored raw) and the
// bytes. Plane b holds byte b of every element; the last plane also holds
// the tail that does not fill an element.

// planeLen is the length of plane b of an n-byte payload cut into es planes.
func planeLen(n, es, b int) int {
	ne := n / es
	if b == es-1 {
		return ne + n - ne*es
	}
	return ne
}

// Compress appends the lz4 packing of payload to dst, shuffling bytes in
// planes of elemSize (4 for float32 values, 2 for 16-bit, 1 for none). If
// packing does not shrink the payload it appends payload unchanged and
// returns applied=false; the caller must put applied into the frame header.
func Compress(dst, payload []byte, elemSize int) (out []byte, applied bool) {
	if elemSize != 2 && elemSize != 4 {
		elemSize = 1
	}
	if len(payload) == 0 {
		return dst, false
	}
	src := payload
	if elemSize > 1 {
		sb := getScratch(len(payload))
		defer scratchPool.Put(sb)
		src = *sb
		shuffle(src, payload, elemSize)
	}
	start := len(dst)
	dst = append(dst, byte(elemSize))
	dst = binary.AppendUvarint(dst, uint64(len(payload)))
	c := compressorPool.Get().(*lz4.Compressor)
	defer compressorPool.Put(c)
	off := 0
	for b := 0; b < elemSize; b++ {
		pl := src[off : off+planeLen(len(payload), elemSize, b)]
		off += len(pl)
		bound := lz4.CompressBlockBound(len(pl))
		at := len(dst)
		var w []byte
		dst, w = grow(dst, binary.MaxVarintLen64+bound)
		n, err := c.CompressBlock(pl, w[binary.MaxVarintLen64:])
		dst = dst[:at]
		if err != nil || n == 0 || n+uvarintLen(uint64(n)) >= len(pl) {
			// Incompressible (lz4 reports n == 0) or no gain: store raw.
			dst = binary.AppendUvarint(dst, 0)
			dst = append(dst, pl...)
		} else {
			// Move the block down behind its length prefix.
			hdr := uvarintLen(uint64(n))
			dst = binary.AppendUvarint(dst, uint64(n))
			dst = dst[:at+hdr+n]
			copy(dst[at+hdr:], w[binary.MaxVarintLen64:binary.MaxVarintLen64+n])
		}
		if len(dst)-start >= len(payload) {
			return append(dst[:start], payload...), false
		}
	}
	return dst, true
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
		r.fail("empty packed payload")
	}
	if r.err == nil && n > 256*len(packed)+64 {
		// lz4 cannot expand more than 255:1; refuse before allocating.
		r.fail("raw length %d impossible from %d packed bytes", n, len(packed))
	}
	if r.err != nil {
		return dst, fmt.Errorf("lz4: %w", r.err)
	}
	start := len(dst)
	dst, w := grow(dst, n)
	buf := w
	if es > 1 {
		sb := getScratch(n)
		defer scratchPool.Put(sb)
		buf = *sb
	}
	off := 0
	for b := 0; b < es; b++ {
		pl := buf[off : off+planeLen(n, es, b)]
		off += len(pl)
		cl := r.uvarint("plane length", len(r.b))
		if cl == 0 {
			copy(pl, r.take(len(pl), "raw plane"))
			if r.err != nil {
				break
			}
			continue
		}
		blk := r.take(cl, "lz4 plane")
		if r.err != nil {
			break
		}
		if len(pl) == 0 {
			// lz4 v4.1.33's assembly decoder dereferences nil on an
			// empty destination; an empty plane is never compressed.
			r.fail("compressed empty plane %d", b)
			break
		}
		got, err := lz4.UncompressBlock(blk, pl)
		if err != nil || got != len(pl) {
			r.fail("plane %d decodes to %d bytes, want %d (%v)", b, got, len(pl), err)
			break
		}
	}
	if err := r.done(); err != nil {
		return dst[:start], fmt.Errorf("lz4: %w", err)
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
	switch es {
	case 2:
		p0, p1 := dst[:ne], dst[ne:2*ne]
		for i := range p0 {
			s := src[2*i : 2*i+2]
			p0[i], p1[i] = s[0], s[1]
		}
	case 4:
		p0, p1, p2, p3 := dst[:ne], dst[ne:2*ne], dst[2*ne:3*ne], dst[3*ne:4*ne]
		for i := range p0 {
			s := src[4*i : 4*i+4]
			p0[i], p1[i], p2[i], p3[i] = s[0], s[1], s[2], s[3]
		}
	default:
		for i := 0; i < ne; i++ {
			for b := 0; b < es; b++ {
				dst[b*ne+i] = src[i*es+b]
			}
		}
	}
	copy(dst[ne*es:], src[ne*es:])
}

func unshuffle(dst, src []byte, es int) {
	ne := len(src) / es
	switch es {
	case 2:
		p0, p1 := src[:ne], src[ne:2*ne]
		for i := range p0 {
			d := dst[2*i : 2*i+2]
			d[0], d[1] = p0[i], p1[i]
		}
	case 4:
		p0, p1, p2, p3 := src[:ne], src[ne:2*ne], src[2*ne:3*ne], src[3*ne:4*ne]
		for i := range p0 {
			d := dst[4*i : 4*i+4]
			d[0], d[1], d[2], d[3] = p0[i], p1[i], p2[i], p3[i]
		}
	default:
		for i := 0; i < ne; i++ {
			for b := 0; b < es; b++ {
				dst[i*es+b] = src[b*ne+i]
			}
		}
	}
	copy(dst[ne*es:], src[ne*es:])
}

// compressorPool holds lz4 compressors: each carries a 64 KiB hash table,
// too big to allocate per message.
var compressorPool = sync.Pool{New: func() any { return new(lz4.Compressor) }}

// scratchPool holds shuffle buffers so the per-message path does not
// allocate.
var scratchPool = sync.Pool{New: func() any { return new([]byte) }}

func getScratch(n int) *[]byte {
	b := scratchPool.Get().(*[]byte)
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	*b = (*b)[:n]
	return b
}

// LinkCodec is a Codec plus the optional lz4 step: what one link direction
// runs. The lz4 flag it returns goes into the frame header (internal/wire
// FlagLZ4; the byte-plane shuffle is recorded inside the packed payload, so
// FlagShuffle stays clear). For the subspace forward path call
// Subspace.EncodeWithTokens directly: it lz4s the token ids itself
// (Subspace.LZ4Tokens), which is where lz4 wins.
type LinkCodec struct {
	Codec Codec
	// LZ4 tries lz4 over the payload and keeps it only when it shrinks.
	LZ4 bool
	// ElemSize is the shuffle plane width for lz4 (see ShuffleWidth).
	ElemSize int

	scratch []byte
	misses  int // consecutive messages lz4 did not shrink
	skipped int // messages sent raw without trying since the last try
}

// After lz4MissLimit consecutive misses LinkCodec tries lz4 only on every
// lz4RetryEvery-th message: a payload type that does not compress (fp16,
// int8, low-rank factors) then costs almost nothing, and a change in the
// data is still noticed within a few messages.
const (
	lz4MissLimit  = 4
	lz4RetryEvery = 16
)

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
	if l.misses >= lz4MissLimit && l.skipped < lz4RetryEvery-1 {
		l.skipped++
		out, err := l.Codec.Encode(dst, x, rows, cols)
		return out, false, err
	}
	l.skipped = 0
	var err error
	l.scratch, err = l.Codec.Encode(l.scratch[:0], x, rows, cols)
	if err != nil {
		return dst, false, err
	}
	out, applied := Compress(dst, l.scratch, l.ElemSize)
	if applied {
		l.misses = 0
	} else {
		l.misses++
	}
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
