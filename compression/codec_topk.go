package compression

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// TopK sends the k = ceil(Frac·rows·cols) entries of largest magnitude, with
// error feedback: what was not sent this call (including rounding of the sent
// values) is kept in the residual and added to the next call's input, so over
// many calls the sum of what was sent tracks the sum of the true inputs.
//
// Payload: u8 value precision, uvarint k, k indices as uvarint gaps (first
// index, then index[i]−index[i−1]−1; strictly increasing), k values.
//
// A TopK value holds its residual: use one per link direction.
type TopK struct {
	// Frac is the fraction of entries sent, in (0, 1].
	Frac float64
	// Precision of the values: FP32, FP16 or BF16.
	Precision Precision
	// Feedback enables error feedback.
	Feedback bool

	residual []float32
	mag      []float32
	idx      []int32
	vals     []float32
}

// ID implements Codec.
func (*TopK) ID() ID { return IDTopK }

func (t *TopK) k(n int) int {
	if n == 0 {
		return 0
	}
	k := int(math.Ceil(t.Frac * float64(n)))
	return max(1, min(n, k))
}

// MaxEncodedLen implements Codec.
func (t *TopK) MaxEncodedLen(rows, cols int) int {
	n := rows * cols
	k := n // the decoder accepts any k ≤ n
	return 1 + binary.MaxVarintLen32 + k*binary.MaxVarintLen32 + k*4
}

// Reset drops the residual (after a rank/config change or a restart).
func (t *TopK) Reset() { clear(t.residual) }

// Encode implements Codec.
func (t *TopK) Encode(dst []byte, x []float32, rows, cols int) ([]byte, error) {
	if !(t.Frac > 0 && t.Frac <= 1) {
		return dst, fmt.Errorf("%w: compression.topk = %v: want (0, 1]", ErrConfig, t.Frac)
	}
	if t.Precision != FP32 && t.Precision != FP16 && t.Precision != BF16 {
		return dst, fmt.Errorf("%w: topk precision %v: want fp32, fp16 or bf16", ErrConfig, t.Precision)
	}
	if err := checkShape(len(x), rows, cols); err != nil {
		return dst, fmt.Errorf("topk: encode: %w", err)
	}
	n := len(x)
	if len(t.residual) != n {
		// A new shape (e.g. a short last micro-batch) cannot reuse the
		// old residual meaningfully; start over.
		t.residual = make([]float32, n)
	}
	m := t.residual // m = x + residual, in place
	for i, v := range x {
		m[i] += v
		if !isFinite32(m[i]) {
			clear(t.residual)
			return dst, fmt.Errorf("topk: encode: element %d: %w", i, ErrNonFinite)
		}
	}
	k := t.k(n)
	if k == 0 { // empty message
		dst = append(dst, byte(t.Precision))
		return binary.AppendUvarint(dst, 0), nil
	}
	thr := t.threshold(m, k)
	t.idx, t.vals = t.idx[:0], t.vals[:0]
	// Take everything strictly above the threshold, then fill with ties.
	for i, v := range m {
		if abs32(v) > thr {
			t.idx = append(t.idx, int32(i))
		}
	}
	for i, v := range m {
		if len(t.idx) >= k {
			break
		}
		if abs32(v) == thr {
			t.idx = append(t.idx, int32(i))
		}
	}
	slices.Sort(t.idx)
	for _, i := range t.idx {
		t.vals = append(t.vals, m[i])
	}
	saturate(t.vals, t.Precision)
	roundTrip(t.vals, t.Precision)

	dst = append(dst, byte(t.Precision))
	dst = binary.AppendUvarint(dst, uint64(len(t.idx)))
	prev := int32(-1)
	for _, i := range t.idx {
		dst = binary.AppendUvarint(dst, uint64(i-prev-1))
		prev = i
	}
	dst = appendValues(dst, t.vals, t.Precision)

	if t.Feedback {
		for j, i := range t.idx {
			m[i] -= t.vals[j]
		}
	} else {
		clear(m)
	}
	return dst, nil
}

// threshold returns the k-th largest magnitude in m (quickselect, O(n));
// 1 ≤ k ≤ len(m).
func (t *TopK) threshold(m []float32, k int) float32 {
	if cap(t.mag) < len(m) {
		t.mag = make([]float32, len(m))
	}
	a := t.mag[:len(m)]
	for i, v := range m {
		a[i] = abs32(v)
	}
	// Find the element that would sit at index k-1 in descending order.
	target := k - 1
	lo, hi := 0, len(a)-1
	for lo < hi {
		p := a[lo+(hi-lo)/2]
		i, j := lo, hi
		for i <= j {
			for a[i] > p {
				i++
			}
			for a[j] < p {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		switch {
		case target <= j:
			hi = j
		case target >= i:
			lo = i
		default:
			return a[target]
		}
	}
	return a[target]
}

// Decode implements Codec.
func (t *TopK) Decode(dst []float32, payload []byte, rows, cols int) error {
	if err := checkShape(len(dst), rows, cols); err != nil {
		return fmt.Errorf("topk: decode: %w", err)
	}
	n := len(dst)
	r := reader{b: payload}
	p := Precision(r.byte("precision"))
	if r.err == nil && p != FP32 && p != FP16 && p != BF16 {
		r.fail("value precision %v", p)
	}
	k := r.uvarint("k", n)
	if r.err != nil {
		return fmt.Errorf("topk: decode: %w", r.err)
	}
	clear(dst)
	// Indices come first, values after; remember where each index goes by
	// reading the values block from the back of the payload.
	vb := precBytes(p)
	if len(r.b) < k*vb {
		return fmt.Errorf("topk: decode: %w: %d bytes cannot hold %d %v values", ErrCorrupt, len(r.b), k, p)
	}
	values := r.b[len(r.b)-k*vb:]
	r.b = r.b[:len(r.b)-k*vb]
	prev := -1
	var one [1]float32
	for j := 0; j < k; j++ {
		gap := r.uvarint("index gap", n)
		if r.err != nil {
			break
		}
		i := prev + 1 + gap
		if i >= n {
			r.fail("index %d out of range %d", i, n)
			break
		}
		readValues(one[:], values[j*vb:], p)
		if !isFinite32(one[0]) {
			r.fail("value %d is %v", j, one[0])
			break
		}
		dst[i] = one[0]
		prev = i
	}
	if err := r.done(); err != nil {
		clear(dst)
		return fmt.Errorf("topk: decode: %w", err)
	}
	return nil
}
