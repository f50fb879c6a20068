package compression

import (
	"encoding/binary"
	"fmt"
	"math"
)

// None sends raw little-endian float32: 4 bytes per value, lossless. NaN and
// Inf pass through unchanged.
type None struct{}

// ID implements Codec.
func (None) ID() ID { return IDNone }

// MaxEncodedLen implements Codec.
func (None) MaxEncodedLen(rows, cols int) int { return 4 * rows * cols }

// Encode implements Codec.
func (None) Encode(dst []byte, x []float32, rows, cols int) ([]byte, error) {
	if err := checkShape(len(x), rows, cols); err != nil {
		return dst, fmt.Errorf("none: encode: %w", err)
	}
	return appendValues(dst, x, FP32), nil
}

// Decode implements Codec.
func (None) Decode(dst []float32, payload []byte, rows, cols int) error {
	if err := checkShape(len(dst), rows, cols); err != nil {
		return fmt.Errorf("none: decode: %w", err)
	}
	if len(payload) != 4*len(dst) {
		return fmt.Errorf("none: decode: %w: %d bytes for %d×%d float32 (want %d)", ErrCorrupt, len(payload), rows, cols, 4*len(dst))
	}
	readValues(dst, payload, FP32)
	return nil
}

// Half sends every value as a 16-bit float: IEEE binary16 (Precision FP16:
// relative error ≤ 2^-11 in the normal range, overflow above 65504 to Inf)
// or bfloat16 (Precision BF16: float32's range, relative error ≤ 2^-8).
// Values exactly representable in the format round-trip exactly.
type Half struct {
	// Format is FP16 or BF16.
	Format Precision
}

// ID implements Codec.
func (h Half) ID() ID {
	if h.Format == BF16 {
		return IDBF16
	}
	return IDFP16
}

// MaxEncodedLen implements Codec.
func (Half) MaxEncodedLen(rows, cols int) int { return 2 * rows * cols }

// Encode implements Codec.
func (h Half) Encode(dst []byte, x []float32, rows, cols int) ([]byte, error) {
	if h.Format != FP16 && h.Format != BF16 {
		return dst, fmt.Errorf("%w: half codec format %v: want fp16 or bf16", ErrConfig, h.Format)
	}
	if err := checkShape(len(x), rows, cols); err != nil {
		return dst, fmt.Errorf("%v: encode: %w", h.Format, err)
	}
	return appendValues(dst, x, h.Format), nil
}

// Decode implements Codec.
func (h Half) Decode(dst []float32, payload []byte, rows, cols int) error {
	if h.Format != FP16 && h.Format != BF16 {
		return fmt.Errorf("%w: half codec format %v: want fp16 or bf16", ErrConfig, h.Format)
	}
	if err := checkShape(len(dst), rows, cols); err != nil {
		return fmt.Errorf("%v: decode: %w", h.Format, err)
	}
	if len(payload) != 2*len(dst) {
		return fmt.Errorf("%v: decode: %w: %d bytes for %d×%d values (want %d)", h.Format, ErrCorrupt, len(payload), rows, cols, 2*len(dst))
	}
	readValues(dst, payload, h.Format)
	return nil
}

// Int8Block is blockwise absmax quantization (as SWARM sends activations): the
// flattened matrix is cut into blocks of BlockSize values; each block sends
// one float32 scale = absmax/127 and one int8 per value, rounded to nearest
// even. The error per element is at most absmax/127/2 of its block.
//
// Payload: uvarint block size, then all scales (float32), then all codes, so
// that a byte-plane shuffle + lz4 sees the scales as one run.
type Int8Block struct {
	// BlockSize is the number of values sharing a scale (e.g. 64).
	BlockSize int
}

// maxBlock bounds BlockSize so a hostile payload cannot claim silly sizes.
const maxBlock = 1 << 20

// ID implements Codec.
func (Int8Block) ID() ID { return IDInt8 }

// MaxEncodedLen implements Codec.
func (q Int8Block) MaxEncodedLen(rows, cols int) int {
	n := rows * cols
	bs := max(q.BlockSize, 1)
	return binary.MaxVarintLen32 + 4*((n+bs-1)/bs) + n
}

// Encode implements Codec.
func (q Int8Block) Encode(dst []byte, x []float32, rows, cols int) ([]byte, error) {
	if q.BlockSize < 1 || q.BlockSize > maxBlock {
		return dst, fmt.Errorf("%w: compression.block_size = %d: want 1..%d", ErrConfig, q.BlockSize, maxBlock)
	}
	if err := checkShape(len(x), rows, cols); err != nil {
		return dst, fmt.Errorf("int8: encode: %w", err)
	}
	n := len(x)
	bs := q.BlockSize
	nb := (n + bs - 1) / bs
	dst = binary.AppendUvarint(dst, uint64(bs))
	dst, w := grow(dst, 4*nb+n)
	scales, codes := w[:4*nb], w[4*nb:]
	for b := 0; b < nb; b++ {
		blk := x[b*bs : min((b+1)*bs, n)]
		var amax float32
		for _, v := range blk {
			amax = max(amax, abs32(v))
		}
		if !(amax <= math.MaxFloat32) {
			return dst[:len(dst)-4*nb-n], fmt.Errorf("int8: encode block %d: %w", b, ErrNonFinite)
		}
		scale := int8Scale(amax)
		binary.LittleEndian.PutUint32(scales[4*b:], math.Float32bits(scale))
		quantBlock(codes[b*bs:b*bs+len(blk)], blk, scale)
	}
	return dst, nil
}

// Decode implements Codec.
func (q Int8Block) Decode(dst []float32, payload []byte, rows, cols int) error {
	if err := checkShape(len(dst), rows, cols); err != nil {
		return fmt.Errorf("int8: decode: %w", err)
	}
	r := reader{b: payload}
	n := len(dst)
	bs := r.uvarint("block size", maxBlock)
	if r.err == nil && bs < 1 {
		r.fail("block size 0")
	}
	if r.err != nil {
		return fmt.Errorf("int8: decode: %w", r.err)
	}
	nb := (n + bs - 1) / bs
	scales := r.take(4*nb, "scales")
	codes := r.take(n, "codes")
	if err := r.done(); err != nil {
		return fmt.Errorf("int8: decode: %w", err)
	}
	for b := 0; b < nb; b++ {
		s := getF32(scales[4*b:])
		if !(s >= 0 && s <= math.MaxFloat32) {
			return fmt.Errorf("int8: decode: %w: block %d scale %v", ErrCorrupt, b, s)
		}
		hi := min((b+1)*bs, n)
		for i := b * bs; i < hi; i++ {
			dst[i] = float32(int8(codes[i])) * s
		}
	}
	return nil
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// quant8 rounds y (|y| ≲ 127) to the nearest integer, ties to even, clamped
// to ±127. Adding and subtracting 1.5·2^23 rounds in the FPU's
// round-to-nearest-even mode: much cheaper than math.RoundToEven in float64.
func quant8(y float32) int8 {
	const magic = 1.5 * (1 << 23)
	r := (y + magic) - magic
	return int8(max(-127, min(127, r))) // y may land a hair past ±127
}

// quantBlock writes round(v/scale) for every v of blk into codes. A scale
// below float32's normal range (a block of subnormal values) would make
// 1/scale overflow, so such blocks divide in float64 instead.
func quantBlock(codes []byte, blk []float32, scale float32) {
	codes = codes[:len(blk)]
	switch {
	case scale == 0:
		clear(codes)
	case scale < 0x1p-126:
		s := float64(scale)
		for i, v := range blk {
			codes[i] = byte(int8(max(-127, min(127, math.RoundToEven(float64(v)/s)))))
		}
	default:
		inv := 1 / scale
		for i, v := range blk {
			codes[i] = byte(quant8(v * inv))
		}
	}
}

// int8Scale is absmax/127, nudged down when 127·scale would overflow to Inf
// on the receiver (absmax within rounding of MaxFloat32).
func int8Scale(amax float32) float32 {
	s := amax / 127
	for s > 0 && s*127 > math.MaxFloat32 {
		s = math.Nextafter32(s, 0)
	}
	return s
}
