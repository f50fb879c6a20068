package compression

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The codecs of the gradient sum among a stage's replicas
// ([compression.replicas], docs/swarm.md). The runtime sums the replicas'
// gradients over a chain: replica 0 sends its gradient up to replica 1,
// which adds its own and passes the partial sum on, and the last replica's
// total comes back down. Every replica must end with the same bits, so with
// a lossy codec each partial sum is coded by its sender and decoded by its
// receiver before adding, the total is coded once by the last replica, and
// every replica — the last one too — uses the decoded total.
//
// What is here is the pure part: the coding of one chunk of a sum
// (AppendReduceChunk, DecodeReduceChunk), the error-feedback memory of one
// replica (Feedback), and, in reduce_powersgd.go, one replica's side of a
// PowerSGD sum (PowerSGD), which is two sums over the chain (the P
// factors, then the Q factors) with local work before, between and after.
// The chain itself, its links and its frames belong to the runtime.

// ReduceMethod is the codec of the replicas' gradient sum. The zero value is
// unknown.
type ReduceMethod int

// Methods of the replicas' gradient sum.
const (
	ReduceUnknown ReduceMethod = iota
	// ReduceNone sends raw float32: the exact sum.
	ReduceNone
	// ReduceFP16 sends IEEE half precision with one power-of-two scale per
	// chunk (see AppendReduceChunk).
	ReduceFP16
	// ReduceInt8 sends blockwise absmax int8 (Int8Block, blocks of
	// ReduceInt8Block values).
	ReduceInt8
	// ReducePowerSGD sends rank-r factors of every 2-D gradient (Vogels et
	// al. 2019) and the rest as float32.
	ReducePowerSGD
)

var reduceNames = [...]string{"none", "fp16", "int8", "powersgd"}

func (m ReduceMethod) String() string {
	if m > ReduceUnknown && int(m) <= len(reduceNames) {
		return reduceNames[m-1]
	}
	return fmt.Sprintf("ReduceMethod(%d)", int(m))
}

// ParseReduceMethod parses "none", "fp16", "int8" or "powersgd",
// case-insensitively.
func ParseReduceMethod(s string) (ReduceMethod, error) {
	for i, n := range reduceNames {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return ReduceMethod(i + 1), nil
		}
	}
	return ReduceUnknown, &KeyError{Key: "compression.replicas.method", Value: strconv.Quote(s), Allowed: "want one of " + strings.Join(reduceNames[:], ", ")}
}

// MarshalText implements encoding.TextMarshaler (TOML, JSON).
func (m ReduceMethod) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (TOML, JSON, --set).
func (m *ReduceMethod) UnmarshalText(b []byte) error {
	v, err := ParseReduceMethod(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Lossy reports whether the method changes the values it sends.
func (m ReduceMethod) Lossy() bool { return m == ReduceFP16 || m == ReduceInt8 || m == ReducePowerSGD }

// ChunkID is the codec ID frames of a chunk of this method's sum carry:
// PowerSGD's factors travel as raw float32.
func (m ReduceMethod) ChunkID() ID {
	switch m {
	case ReduceFP16:
		return IDFP16
	case ReduceInt8:
		return IDInt8
	}
	return IDNone
}

// DefaultReduceRank is PowerSGD's rank when the config leaves it unset: the
// paper's rank 4 matched full-precision SGD on its image and language
// models.
const DefaultReduceRank = 4

// ReduceInt8Block is the number of values sharing one int8 scale (as the
// [compression] int8 codec's default block_size).
const ReduceInt8Block = 64

// ReduceConfig is the [compression.replicas] table: how the gradient sum
// among a stage's replicas travels. It has no effect with one replica a
// stage.
type ReduceConfig struct {
	// Method is none (float32, the exact sum), fp16, int8 or powersgd.
	// Default none.
	Method ReduceMethod `toml:"method"`
	// Rank is PowerSGD's r; 0 (unset) means DefaultReduceRank. Each
	// matrix uses min(r, rows, cols); a matrix whose factors would not be
	// smaller than itself is sent whole. powersgd only.
	Rank int `toml:"rank"`
	// ErrorFeedback carries what a replica's coded values missed into its
	// next step's gradient (each replica its own residual). Default true:
	// unlike activations, consecutive gradients are summed by the
	// optimizer, so the residual belongs where it is added. Ignored by
	// none, which loses nothing.
	ErrorFeedback bool `toml:"error_feedback"`
}

// DefaultReduceConfig returns the defaults documented on ReduceConfig.
func DefaultReduceConfig() ReduceConfig {
	return ReduceConfig{Method: ReduceNone, ErrorFeedback: true}
}

// RankOrDefault is the PowerSGD rank the config asks for.
func (c ReduceConfig) RankOrDefault() int {
	if c.Rank == 0 {
		return DefaultReduceRank
	}
	return c.Rank
}

// Validate reports every bad key of the table, each a *KeyError.
func (c ReduceConfig) Validate() error {
	var errs []error
	bad := func(key string, val any, allowed string) {
		errs = append(errs, &KeyError{Key: "compression.replicas." + key, Value: val, Allowed: allowed})
	}
	if c.Method <= ReduceUnknown || int(c.Method) > len(reduceNames) {
		bad("method", c.Method, "want one of "+strings.Join(reduceNames[:], ", "))
	}
	switch {
	case c.Rank != 0 && c.Method != ReducePowerSGD:
		bad("rank", c.Rank, fmt.Sprintf(`works only with method = "powersgd" (method is %q); remove it`, c.Method))
	case c.Rank < 0 || c.Rank > maxRank:
		bad("rank", c.Rank, fmt.Sprintf("want 1..%d (0 or unset: %d)", maxRank, DefaultReduceRank))
	}
	return errors.Join(errs...)
}

// Label names the setting briefly: "int8", "powersgd r=4", "fp16 -ef".
func (c ReduceConfig) Label() string {
	s := c.Method.String()
	if c.Method == ReducePowerSGD {
		s += " r=" + strconv.Itoa(c.RankOrDefault())
	}
	if c.Method.Lossy() && !c.ErrorFeedback {
		s += " -ef"
	}
	return s
}

// ReduceChunkLen is the payload length of one chunk of n values.
func ReduceChunkLen(n int, m ReduceMethod) int {
	switch m {
	case ReduceFP16:
		return 2 + 2*n
	case ReduceInt8:
		return Int8Block{BlockSize: ReduceInt8Block}.MaxEncodedLen(1, n) - binary.MaxVarintLen32 + uvarintLen(ReduceInt8Block)
	}
	return 4 * n
}

// AppendReduceChunk appends the coding of x, one chunk of a partial or total
// sum, to dst, and writes into got (len(x); it may be x itself) exactly what
// DecodeReduceChunk will give the receiver, for error feedback and for the
// last replica, which must use the decoded total as every other replica
// does.
//
//   - none: float32, lossless (NaN and Inf pass through).
//   - powersgd: the factors' sums, float32; non-finite values refused.
//   - fp16: an int16 exponent e, then every value·2^e as IEEE half with
//     round-to-nearest-even. e puts the chunk's largest magnitude in
//     [2^14, 2^15), so nothing overflows and the only loss is fp16's 11-bit
//     rounding (relative error ≤ 2^-11 for values within 2^14 of the
//     chunk's largest; smaller ones keep an absolute error of 2^-25 of
//     it). fp16 rather than bf16: 3 more significand bits (8× finer
//     rounding), and the scale removes fp16's one drawback for gradients,
//     its range (unscaled, gradients below 6e-8 would vanish).
//   - int8: Int8Block with ReduceInt8Block values a scale.
//
// Lossy methods refuse non-finite input (ErrNonFinite): a gradient holding
// Inf or NaN has diverged.
func AppendReduceChunk(dst []byte, x, got []float32, m ReduceMethod) ([]byte, error) {
	if len(got) != len(x) {
		return dst, fmt.Errorf("%w: reduce chunk of %d values, %d to decode into", ErrShape, len(x), len(got))
	}
	start := len(dst)
	switch m {
	case ReduceNone:
		dst = appendValues(dst, x, FP32)
		copy(got, x)
		return dst, nil
	case ReducePowerSGD:
		for _, v := range x {
			if !isFinite32(v) {
				return dst, fmt.Errorf("powersgd factor chunk: %w", ErrNonFinite)
			}
		}
		dst = appendValues(dst, x, FP32)
		copy(got, x)
		return dst, nil
	case ReduceFP16:
		var amax float32
		for _, v := range x {
			amax = max(amax, abs32(v))
		}
		if !(amax <= math.MaxFloat32) {
			return dst, fmt.Errorf("fp16 reduce chunk: %w", ErrNonFinite)
		}
		e := 0
		if amax > 0 {
			_, k := math.Frexp(float64(amax)) // amax = f·2^k, f in [0.5, 1)
			e = 15 - k
		}
		dst = binary.LittleEndian.AppendUint16(dst, uint16(int16(e)))
		var w []byte
		dst, w = grow(dst, 2*len(x))
		s := math.Ldexp(1, e)
		for i, v := range x {
			binary.LittleEndian.PutUint16(w[2*i:], F32ToF16(float32(float64(v)*s)))
		}
	case ReduceInt8:
		var err error
		if dst, err = (Int8Block{BlockSize: ReduceInt8Block}).Encode(dst, x, 1, len(x)); err != nil {
			return dst, fmt.Errorf("int8 reduce chunk: %w", err)
		}
	default:
		return dst, fmt.Errorf("%w: reduce method %v", ErrConfig, m)
	}
	if err := DecodeReduceChunk(got, dst[start:], m); err != nil {
		return dst, fmt.Errorf("reduce chunk does not decode (a bug): %w", err)
	}
	return dst, nil
}

// maxReduceExp bounds the fp16 chunk exponent: 15 − k for float32's binary
// exponents k (−148..128), with room to spare.
const maxReduceExp = 200

// DecodeReduceChunk decodes one chunk of len(dst) values. On hostile bytes
// it returns an error wrapping ErrCorrupt, never panics, and never writes a
// non-finite value for a lossy method.
func DecodeReduceChunk(dst []float32, payload []byte, m ReduceMethod) error {
	switch m {
	case ReduceNone, ReducePowerSGD:
		if len(payload) != 4*len(dst) {
			return fmt.Errorf("%w: reduce chunk has %d bytes for %d float32 values (want %d)", ErrCorrupt, len(payload), len(dst), 4*len(dst))
		}
		readValues(dst, payload, FP32)
		if m == ReducePowerSGD {
			for i, v := range dst {
				if !isFinite32(v) {
					return fmt.Errorf("%w: powersgd factor value %d is %v", ErrCorrupt, i, v)
				}
			}
		}
		return nil
	case ReduceFP16:
		if len(payload) != 2+2*len(dst) {
			return fmt.Errorf("%w: fp16 reduce chunk has %d bytes for %d values (want %d)", ErrCorrupt, len(payload), len(dst), 2+2*len(dst))
		}
		e := int(int16(binary.LittleEndian.Uint16(payload)))
		if e < -maxReduceExp || e > maxReduceExp {
			return fmt.Errorf("%w: fp16 reduce chunk exponent %d", ErrCorrupt, e)
		}
		s := math.Ldexp(1, -e)
		for i := range dst {
			h := binary.LittleEndian.Uint16(payload[2+2*i:])
			if h&0x7c00 == 0x7c00 {
				return fmt.Errorf("%w: fp16 reduce chunk value %d is Inf or NaN", ErrCorrupt, i)
			}
			v := float32(float64(F16ToF32(h)) * s)
			if !isFinite32(v) {
				return fmt.Errorf("%w: fp16 reduce chunk value %d overflows float32 (exponent %d)", ErrCorrupt, i, e)
			}
			dst[i] = v
		}
		return nil
	case ReduceInt8:
		if err := (Int8Block{}).Decode(dst, payload, 1, len(dst)); err != nil {
			return fmt.Errorf("int8 reduce chunk: %w", err)
		}
		for i, v := range dst {
			if !isFinite32(v) {
				return fmt.Errorf("%w: int8 reduce chunk value %d overflows float32", ErrCorrupt, i)
			}
		}
		return nil
	}
	return fmt.Errorf("%w: reduce method %v", ErrConfig, m)
}

// Feedback is one replica's error-feedback memory over a fixed list of
// tensors: what the values it sent missed, added to its next step's
// gradient. Each replica keeps its own (what it missed of its own partial
// sum), so replicas' Feedback differs while their decoded totals agree.
//
// It is kept per step: Begin(step) makes the residual the previous step
// produced the one to add, unless step is a redo of the step in progress
// (then the residual it started from is added again); Commit marks the
// step's sum complete. So a sum that fails halfway and is redone adds
// exactly what the first attempt added.
type Feedback struct {
	in, out [][]float32
	step    int
	begun   bool
	done    bool
}

// NewFeedback holds a residual of sizes[i] values for tensor i, all zero.
func NewFeedback(sizes []int) *Feedback {
	f := &Feedback{in: make([][]float32, len(sizes)), out: make([][]float32, len(sizes))}
	for i, n := range sizes {
		f.in[i], f.out[i] = make([]float32, n), make([]float32, n)
	}
	return f
}

// Begin starts step (see Feedback).
func (f *Feedback) Begin(step int) {
	if f.begun && step != f.step && f.done {
		f.in, f.out = f.out, f.in
	}
	f.step, f.begun, f.done = step, true, false
	for _, o := range f.out {
		clear(o)
	}
}

// Commit marks the step's sum complete: its residual is the next step's.
func (f *Feedback) Commit() { f.done = true }

// Reset forgets every residual (a restored state does not hold them).
func (f *Feedback) Reset() {
	for i := range f.in {
		clear(f.in[i])
		clear(f.out[i])
	}
	f.begun, f.done = false, false
}

// Add adds tensor i's residual at offsets off.. into x.
func (f *Feedback) Add(i, off int, x []float32) {
	e := f.in[i][off : off+len(x)]
	for j := range x {
		x[j] += e[j]
	}
}

// Keep records, for tensor i at offsets off.., what the receiver misses of
// sent: sent − got, got being what it decodes.
func (f *Feedback) Keep(i, off int, sent, got []float32) {
	e := f.out[i][off : off+len(sent)]
	for j := range sent {
		e[j] = sent[j] - got[j]
	}
}

// Residual is tensor i's residual as the next step will add it (for
// tests and diagnostics).
func (f *Feedback) Residual(i int) []float32 {
	if f.done {
		return f.out[i]
	}
	return f.in[i]
}
