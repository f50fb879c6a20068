package compression

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// ID identifies a codec in every frame header (one byte). The values are part
// of the wire format: add new ones, never renumber.
type ID uint8

// Codec IDs. IDNone is 0 so that a zeroed header means "raw float32".
const (
	IDNone     ID = 0
	IDFP16     ID = 1
	IDBF16     ID = 2
	IDInt8     ID = 3
	IDTopK     ID = 4
	IDLowRank  ID = 5
	IDSubspace ID = 6
	// IDSubspaceTC is the transform-coded subspace codec
	// (codec_subspace_tc.go).
	IDSubspaceTC ID = 7
)

var idNames = [...]string{"none", "fp16", "bf16", "int8", "topk", "lowrank", "subspace", "subspace-tc"}

func (id ID) String() string {
	if int(id) < len(idNames) {
		return idNames[id]
	}
	return fmt.Sprintf("ID(%d)", uint8(id))
}

// Method names a codec in the config. The zero value is unknown, so a config
// that forgot the key fails validation instead of silently sending fp32.
type Method int

// Methods, in the order of the wire IDs.
const (
	MethodUnknown Method = iota
	MethodNone
	MethodFP16
	MethodBF16
	MethodInt8
	MethodTopK
	MethodLowRank
	MethodSubspace
	// MethodSubspaceTC is "subspace-tc": stateful per link direction, built
	// with NewTCPair (or NewTCEncoder/NewTCDecoder), not with New.
	MethodSubspaceTC
)

func (m Method) String() string {
	if m > MethodUnknown && m <= MethodSubspaceTC {
		return idNames[m-1]
	}
	return fmt.Sprintf("Method(%d)", int(m))
}

// ID is the wire ID of the method's codec.
func (m Method) ID() ID { return ID(m - 1) }

// ParseMethod parses a config name ("none", "fp16", "bf16", "int8", "topk",
// "lowrank", "subspace", "subspace-tc"), case-insensitively.
func ParseMethod(s string) (Method, error) {
	for i, n := range idNames {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return Method(i + 1), nil
		}
	}
	return MethodUnknown, fmt.Errorf("%w: compression.method = %q: want one of %s", ErrConfig, s, strings.Join(idNames[:], ", "))
}

// MarshalText implements encoding.TextMarshaler (TOML, JSON).
func (m Method) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (TOML, JSON, --set).
func (m *Method) UnmarshalText(b []byte) error {
	v, err := ParseMethod(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Precision is the number format of the values a lossy codec sends (top-k
// values, low-rank factors, subspace coefficients). Its value is also the
// byte written into payloads, so never renumber.
type Precision uint8

// Precisions. The zero value is unknown.
const (
	PrecisionUnknown Precision = iota
	FP32
	FP16
	BF16
	Int8
	// Int4 and Int6 are sub-byte subspace coefficients with a bf16 scale
	// per row (see lowbit.go).
	Int4
	Int6
	// Int3 (levels −3..3) and Int2 (ternary −1, 0, 1): coarser still, for
	// measuring how far trading bits for k goes.
	Int3
	Int2
)

var precNames = [...]string{"unknown", "fp32", "fp16", "bf16", "int8", "int4", "int6", "int3", "int2"}

func (p Precision) String() string {
	if int(p) < len(precNames) {
		return precNames[p]
	}
	return fmt.Sprintf("Precision(%d)", uint8(p))
}

// ParsePrecision parses "fp32", "fp16", "bf16", "int8", "int6", "int4",
// "int3" or "int2".
func ParsePrecision(s string) (Precision, error) {
	for i := 1; i < len(precNames); i++ {
		if strings.EqualFold(strings.TrimSpace(s), precNames[i]) {
			return Precision(i), nil
		}
	}
	return PrecisionUnknown, fmt.Errorf("%w: compression.precision = %q: want fp32, fp16, bf16, int8, int6, int4, int3 or int2", ErrConfig, s)
}

// MarshalText implements encoding.TextMarshaler.
func (p Precision) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Precision) UnmarshalText(b []byte) error {
	v, err := ParsePrecision(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Codec compresses one rows×cols row-major float32 matrix per call. Encode
// may keep state (error feedback) in the codec value; Decode never depends on
// the encoder's state, only on the payload, rows and cols, and validates the
// payload fully: on hostile bytes it returns an error wrapping ErrCorrupt,
// never panics, and never allocates more than rows*cols-proportional memory.
type Codec interface {
	ID() ID
	// Encode appends the encoding of x (rows×cols, row-major) to dst.
	Encode(dst []byte, x []float32, rows, cols int) ([]byte, error)
	// Decode writes the reconstruction into dst (len rows*cols).
	Decode(dst []float32, payload []byte, rows, cols int) error
	// MaxEncodedLen bounds the payload length for rows×cols, so receivers
	// can size buffers and bound decompression.
	MaxEncodedLen(rows, cols int) int
}

// TokenCodec is a Codec whose forward path also carries the token id of
// every row (the subspace codec: the receiver needs the ids to add back the
// fixed embedding E0[tok]). The runtime type-asserts for it on the forward
// link; the plain Codec methods are the backward (gradient) path.
type TokenCodec interface {
	Codec
	// EncodeWithTokens appends the encoding of activations h (rows×cols)
	// and their token ids (len rows) to dst.
	EncodeWithTokens(dst []byte, h []float32, tokens []int32, rows, cols int) ([]byte, error)
	// DecodeWithTokens rebuilds h (rows×cols) and the token ids (len rows).
	DecodeWithTokens(h []float32, tokens []int32, payload []byte, rows, cols int) error
}

// maxElems bounds rows*cols: a micro-batch larger than this is a bug or an
// attack, and it keeps every size computation far from int overflow.
const maxElems = 1 << 30

// checkShape validates rows, cols and the matrix buffer length.
func checkShape(n int, rows, cols int) error {
	if rows < 0 || cols < 0 {
		return fmt.Errorf("%w: negative shape %d×%d", ErrShape, rows, cols)
	}
	if cols != 0 && rows > maxElems/cols {
		return fmt.Errorf("%w: %d×%d exceeds the %d-element limit", ErrShape, rows, cols, maxElems)
	}
	if n != rows*cols {
		return fmt.Errorf("%w: buffer holds %d values, %d×%d needs %d", ErrShape, n, rows, cols, rows*cols)
	}
	return nil
}

func appendF32(dst []byte, v float32) []byte {
	return binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
}

func getF32(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) }

// grow returns dst with room for n more bytes, and the n-byte window to fill.
func grow(dst []byte, n int) ([]byte, []byte) {
	l := len(dst)
	if cap(dst)-l < n {
		nd := make([]byte, l, l+n)
		copy(nd, dst)
		dst = nd
	}
	dst = dst[:l+n]
	return dst, dst[l:]
}

// reader walks a payload, turning every overrun into ErrCorrupt.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
}

func (r *reader) byte(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail("truncated before %s", what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// uvarint reads a uvarint and checks it is ≤ max.
func (r *reader) uvarint(what string, max int) int {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint for %s", what)
		return 0
	}
	if v > uint64(max) {
		r.fail("%s = %d exceeds %d", what, v, max)
		return 0
	}
	r.b = r.b[n:]
	return int(v)
}

// take returns the next n bytes.
func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.fail("%s: need %d bytes, have %d", what, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// done checks that the payload was consumed exactly.
func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}

// precBytes is the size of one value in precision p (0 if p is invalid for
// a plain value array).
func precBytes(p Precision) int {
	switch p {
	case FP32:
		return 4
	case FP16, BF16:
		return 2
	case Int8:
		return 1
	}
	return 0
}

// appendValues appends v in precision p (FP32, FP16 or BF16).
func appendValues(dst []byte, v []float32, p Precision) []byte {
	switch p {
	case FP32:
		dst, w := grow(dst, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(w[4*i:], math.Float32bits(x))
		}
		return dst
	case FP16:
		dst, w := grow(dst, 2*len(v))
		for i, x := range v {
			// F32ToF16's fast path, inlined by hand (it is over the
			// compiler's inlining budget).
			b := math.Float32bits(x)
			var h uint16
			if a := b &^ (1 << 31); a-113<<23 < 30<<23 {
				a = a - (127-15)<<23 + 0xfff + (a>>13)&1
				h = uint16(b>>16)&0x8000 | uint16(a>>13)
			} else {
				h = f32ToF16Slow(x)
			}
			binary.LittleEndian.PutUint16(w[2*i:], h)
		}
		return dst
	case BF16:
		dst, w := grow(dst, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(w[2*i:], F32ToBF16(x))
		}
		return dst
	}
	panic("compression: appendValues: precision " + p.String() + " (broken invariant: validated earlier)")
}

// readValues decodes len(dst) values of precision p from b (exact length).
func readValues(dst []float32, b []byte, p Precision) {
	switch p {
	case FP32:
		for i := range dst {
			dst[i] = getF32(b[4*i:])
		}
	case FP16:
		for i := range dst {
			h := binary.LittleEndian.Uint16(b[2*i:])
			if e := uint32(h>>10) & 0x1f; e-1 < 30 { // F16ToF32's fast path
				dst[i] = math.Float32frombits(uint32(h&0x8000)<<16 | (uint32(h&0x7fff)<<13 + (127-15)<<23))
			} else {
				dst[i] = f16ToF32Slow(h)
			}
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	default:
		panic("compression: readValues: precision " + p.String() + " (broken invariant: validated earlier)")
	}
}

// saturate clamps v in place to the finite range of precision p, so a lossy
// codec never sends ±Inf for a large finite value (its decoder rejects
// non-finite values as corruption); error feedback carries the clipped part.
func saturate(v []float32, p Precision) {
	var lim float32
	switch p {
	case FP16:
		lim = 65504
	case BF16:
		lim = BF16ToF32(0x7f7f)
	default:
		return
	}
	for i, x := range v {
		v[i] = max(-lim, min(lim, x))
	}
}

// roundTrip rounds v in place to what precision p delivers, so error
// feedback accounts for the rounding the receiver will see.
func roundTrip(v []float32, p Precision) {
	switch p {
	case FP16:
		for i, x := range v {
			v[i] = F16ToF32(F32ToF16(x))
		}
	case BF16:
		for i, x := range v {
			v[i] = BF16ToF32(F32ToBF16(x))
		}
	}
}

func isFinite32(v float32) bool { return v-v == 0 }
