package data

import (
	"encoding/binary"
	"fmt"
)

// Tokens is a stream of token ids stored flat and little-endian, 1, 2 or
// 4 bytes an id: the text itself for a byte run (so the byte path reads
// exactly the bytes it always did), and a memory-mapped cache file for a
// tokenized one (so a second run does not hold or re-encode the corpus).
// The zero value is empty.
type Tokens struct {
	raw   []byte
	width int
}

// Bytes wraps text as one token per byte.
func Bytes(text []byte) Tokens { return Tokens{raw: text, width: 1} }

// IDs stores ids at the narrowest width their vocabulary of vocab ids
// needs (WidthFor).
func IDs(ids []int32, vocab int) Tokens {
	w := WidthFor(vocab)
	raw := make([]byte, len(ids)*w)
	putIDs(raw, ids, w)
	return Tokens{raw: raw, width: w}
}

// WidthFor is the bytes per id of a vocabulary of vocab ids: 1 up to 256,
// 2 up to 65,536, else 4.
func WidthFor(vocab int) int {
	switch {
	case vocab <= 1<<8:
		return 1
	case vocab <= 1<<16:
		return 2
	}
	return 4
}

// Len is the number of ids.
func (t Tokens) Len() int {
	if t.width == 0 {
		return 0
	}
	return len(t.raw) / t.width
}

// Width is the bytes per id (0 for the zero value).
func (t Tokens) Width() int { return t.width }

// Raw is the little-endian ids; for a byte stream, the text. The caller
// must not modify it (it may be a read-only mapping).
func (t Tokens) Raw() []byte { return t.raw }

// At is id i.
func (t Tokens) At(i int) int32 {
	switch t.width {
	case 1:
		return int32(t.raw[i])
	case 2:
		return int32(binary.LittleEndian.Uint16(t.raw[2*i:]))
	}
	return int32(binary.LittleEndian.Uint32(t.raw[4*i:]))
}

// Slice is ids i … j-1, sharing storage.
func (t Tokens) Slice(i, j int) Tokens {
	if i < 0 || j < i || j > t.Len() {
		panic(fmt.Sprintf("data: Tokens.Slice(%d, %d) of %d", i, j, t.Len())) // a broken invariant of the caller
	}
	return Tokens{raw: t.raw[i*t.width : j*t.width], width: t.width}
}

// Append is a new stream of t's ids then u's (same width).
func (t Tokens) Append(u Tokens) Tokens {
	w := max(t.width, u.width)
	if t.width != 0 && u.width != 0 && t.width != u.width {
		panic("data: appending token streams of different widths") // a broken invariant of the caller
	}
	raw := make([]byte, 0, len(t.raw)+len(u.raw))
	return Tokens{raw: append(append(raw, t.raw...), u.raw...), width: w}
}

// Window copies ids off … off+n-1 into dst.
func (t Tokens) Window(dst []int32, off int) {
	for i := range dst {
		dst[i] = t.At(off + i)
	}
}

// putIDs writes ids little-endian at width w into raw (len(ids)*w bytes).
func putIDs(raw []byte, ids []int32, w int) {
	switch w {
	case 1:
		for i, id := range ids {
			raw[i] = byte(id)
		}
	case 2:
		for i, id := range ids {
			binary.LittleEndian.PutUint16(raw[2*i:], uint16(id))
		}
	default:
		for i, id := range ids {
			binary.LittleEndian.PutUint32(raw[4*i:], uint32(id))
		}
	}
}
