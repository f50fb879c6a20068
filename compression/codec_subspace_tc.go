package compression

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// The transform codec ("subspace-tc", wire ID 7) codes the subspace codec's
// k coefficients per token (c = Uᵀ(h − E0[tok]) forward, c = Uᵀg backward:
// see Subspace) the way an image codec codes pixels, because those k numbers
// are far from independent and far from unpredictable (issue #16):
//
//  1. Prediction: both ends keep, per id, the running mean of the decoded
//     coefficients of the rows with that id — the input token forward, the
//     target (next) token backward — and only the residual r = c − P[id] is
//     coded. Closed loop: the mean is of what the receiver decoded, so both
//     ends hold the same P without sending it.
//  2. Rotation: the residual is turned to the principal axes of recent
//     decoded residuals, z = Rᵀr, which packs the energy into a few
//     coordinates. Either both ends derive R from decoded data (costs no
//     bytes; needs bit-identical arithmetic: jacobi.go) or the sender sends
//     R as fp16 every RotationInterval messages (costs 2k² bytes each time,
//     immune to arithmetic differences).
//  3. Quantization: one uniform step Δ = Step·σ per message, σ the RMS of
//     the message's coefficients c (so Step is the step relative to the
//     signal, whatever share the predictor removed). Activations round to
//     nearest; gradients round stochastically (unbiased), with random bits
//     from (seed, message number), so a redone message codes the same bits.
//  4. Entropy coding: one rANS stream (rans.go) holds the ids (when sent;
//     order-0 adaptive model) and every level under a per-message
//     parametric model per rotated dimension (tc_model.go, 1 byte each).
//
// State discipline: the predictor, the rotation, its covariance and the id
// model are cross-message state that both ends must hold identically. They
// change only when a message is coded (encoder) or accepted (decoder), never
// on a failed decode. A 64-bit digest chains everything that changed them
// (ids, every decoded coefficient's bits, every rotation); each payload
// carries its low 32 bits as of before the message, so a receiver whose
// state differs from the sender's returns ErrDesync instead of silently
// decoding garbage. Snapshot/Restore/Reset move the state with the run's
// (step, epoch) bookkeeping: snapshot both ends at a step boundary, restore
// both on an abort or redo, reset both on a fresh start.
//
// Payload: u8 flags (bit 0 forward, bit 1 ids present, bit 2 rotation
// present; others 0), u32 state checksum, f32 Δ, [k×k fp16 rotation,
// column-major], k model bytes, then the rANS stream (8-byte state, 32-bit
// words) of [ids] and the levels of every row's non-zero-model dimensions.

// Direction is the link direction a transform coder serves. The zero value
// is unknown.
type Direction uint8

// Directions.
const (
	DirUnknown Direction = iota
	// DirForward codes activations h with their input token ids.
	DirForward
	// DirBackward codes gradients g keyed by target token ids.
	DirBackward
)

func (d Direction) String() string {
	switch d {
	case DirForward:
		return "forward"
	case DirBackward:
		return "backward"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// Rotation selects how the transform codec's rotation reaches the receiver.
// The zero value is unknown.
type Rotation uint8

// Rotation modes.
const (
	RotationUnknown Rotation = iota
	// RotationDerived: both ends derive R from decoded residuals.
	RotationDerived
	// RotationSent: the sender sends R as fp16 every RotationInterval
	// messages.
	RotationSent
	// RotationOff: no rotation (for measuring what it buys).
	RotationOff
)

var rotationNames = [...]string{"unknown", "derived", "sent", "off"}

func (r Rotation) String() string {
	if int(r) < len(rotationNames) {
		return rotationNames[r]
	}
	return fmt.Sprintf("Rotation(%d)", uint8(r))
}

// ParseRotation parses "derived", "sent" or "off".
func ParseRotation(s string) (Rotation, error) {
	for i := 1; i < len(rotationNames); i++ {
		if strings.EqualFold(strings.TrimSpace(s), rotationNames[i]) {
			return Rotation(i), nil
		}
	}
	return RotationUnknown, fmt.Errorf("%w: compression.rotation = %q: want derived, sent or off", ErrConfig, s)
}

// MarshalText implements encoding.TextMarshaler.
func (r Rotation) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Rotation) UnmarshalText(b []byte) error {
	v, err := ParseRotation(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// TCOptions tunes one transform-coded link direction; both ends of a link
// must use the same (the first payload after a mismatch gives ErrDesync).
type TCOptions struct {
	// Step is the quantization step relative to the RMS of the message's
	// coefficients (compression.step).
	Step float64
	// Rotation is how R reaches the receiver (compression.rotation).
	Rotation Rotation
	// RotationInterval is the number of messages between rotation
	// refreshes (compression.rotation_interval); the first refreshes come
	// sooner, after messages 1, 2, 4, … below it.
	RotationInterval int
	// PredictorDecay is the floor of the predictor's update weight
	// (compression.predictor_decay): the mean of an id's first 1/decay
	// decoded rows, then an exponential moving average with that weight,
	// so the mean follows the weights as they train. 0 turns the predictor
	// off.
	PredictorDecay float64
	// Period, if > 0, adds a second predictor keyed by the row's position
	// in its sequence, row mod Period (messages are B sequences of
	// Period = block_size tokens, row-major): the position embedding and
	// the average context at each position are as predictable as the
	// token's own part. Both ends know it; it is never sent.
	Period int
	// SendIDs sends the ids in the payload (entropy-coded). Off when the
	// receiver already has them (the last stage holds the targets, a
	// driver can give every stage its micro-batch's tokens): the decoder's
	// caller then passes them in.
	SendIDs bool
	// Seed seeds the stochastic rounding of gradients.
	Seed uint64
}

// DefaultTCOptions are the defaults of the config keys for the forward
// direction (TCOptionsFrom(DefaultConfig(), DirBackward, …) has the
// backward step).
func DefaultTCOptions() TCOptions {
	return TCOptions{Step: 0.5, Rotation: RotationDerived, RotationInterval: 16, PredictorDecay: 0.02}
}

// TCOptionsFrom takes the transform codec's keys from cfg for direction dir
// (the backward step is grad_step when set). period is the sequence length
// of the messages' rows (model.block_size), 0 for no position predictor;
// it is used forward only.
func TCOptionsFrom(cfg Config, dir Direction, seed uint64, sendIDs bool, period int) TCOptions {
	step := cfg.Step
	if dir == DirBackward {
		if cfg.GradStep != 0 {
			step = cfg.GradStep
		}
		// The position predictor is for activations (the position
		// embedding); on gradients it measured no gain (34.4 vs 33.9
		// B/token over the harness's first 20 steps).
		period = 0
	}
	return TCOptions{Step: step, Rotation: cfg.Rotation, RotationInterval: cfg.RotationInterval,
		PredictorDecay: cfg.PredictorDecay, Period: period, SendIDs: sendIDs, Seed: seed}
}

func (o TCOptions) validate() error {
	switch {
	case !(o.Step > 0 && o.Step <= 16):
		return &KeyError{Key: "compression.step", Value: o.Step, Allowed: "want a step in (0, 16] (relative to the coefficients' RMS)"}
	case o.Rotation < RotationDerived || o.Rotation > RotationOff:
		return &KeyError{Key: "compression.rotation", Value: o.Rotation, Allowed: "want derived, sent or off"}
	case o.RotationInterval < 1 || o.RotationInterval > 1<<20:
		return &KeyError{Key: "compression.rotation_interval", Value: o.RotationInterval, Allowed: "want 1..1048576 messages"}
	case !(o.PredictorDecay >= 0 && o.PredictorDecay <= 1):
		return &KeyError{Key: "compression.predictor_decay", Value: o.PredictorDecay, Allowed: "want 0 (off) .. 1"}
	case o.Period < 0 || o.Period > maxDim:
		return fmt.Errorf("%w: transform codec period %d: want 0..%d (model.block_size)", ErrConfig, o.Period, maxDim)
	}
	return nil
}

const (
	tcFlagForward  = 1
	tcFlagIDs      = 2
	tcFlagRotation = 4
	tcHeader       = 1 + 4 + 4
	// tcLimit bounds |ĉ|: far from float32 overflow through Basis.Expand
	// and the predictor, never reached by an honest sender.
	tcLimit = 1e30
)

// TCStats are an encoder's running totals since it was built (not part of
// the state: Restore and Reset leave them), for metrics and for seeing where
// the bytes go.
type TCStats struct {
	Messages, Rows int64
	// Signal is Σc² of the coefficients, Residual Σr² after the predictor:
	// 1 − Residual/Signal is the share of energy the predictor removed.
	Signal, Residual float64
	// Levels counts coded levels, NonZero those ≠ 0.
	Levels, NonZero int64
	// Bytes by part: header (flags, checksum, step), rotation, model bytes,
	// and the rANS stream (ids and levels together).
	HeaderBytes, RotationBytes, ModelBytes, StreamBytes int64
	// IDBits is the ideal code length of the ids under their model.
	IDBits float64
}

// tcCore is what both ends share: the subspace, the options and the state.
type tcCore struct {
	sub   *Subspace
	dir   Direction
	o     TCOptions
	st    tcState
	stats TCStats

	// scratch
	c      []float32
	diff   []float32
	z, rm  []float32
	lv     []int32
	chat   []float32
	params []byte
	syms   []ransSym
	acc    []float64
	newRot []float64
}

func newTCCore(sub *Subspace, dir Direction, o TCOptions) (tcCore, error) {
	if sub == nil || sub.Basis == nil {
		return tcCore{}, fmt.Errorf("%w: transform codec needs a subspace", ErrConfig)
	}
	if dir != DirForward && dir != DirBackward {
		return tcCore{}, fmt.Errorf("%w: transform codec direction %v", ErrConfig, dir)
	}
	if err := o.validate(); err != nil {
		return tcCore{}, err
	}
	c := tcCore{sub: sub, dir: dir, o: o}
	c.st.init(sub, dir, o)
	return c, nil
}

// ID is the wire ID of the transform codec's payloads.
func (*tcCore) ID() ID { return IDSubspaceTC }

// Subspace is the projection under the transform (its basis and E0 are
// what a constrained model's weights need).
func (c *tcCore) Subspace() *Subspace { return c.sub }

// Snapshot returns the cross-message state; Restore of it on a coder of the
// same subspace, direction and options gives back exactly this state.
func (c *tcCore) Snapshot() []byte { return c.st.snapshot() }

// Restore replaces the state by a Snapshot's. On error the state is left
// as it was.
func (c *tcCore) Restore(b []byte) error { return c.st.restore(b) }

// Reset returns the state to that of a new coder.
func (c *tcCore) Reset() { c.st.init(c.sub, c.dir, c.o) }

// Checksum is the state digest whose low 32 bits the next payload carries.
func (c *tcCore) Checksum() uint64 { return c.st.digest }

// MaxEncodedLen bounds a payload for rows×cols: header, rotation, model
// bytes, and per row its id and k levels at their widest (an escape with a
// 26-bit magnitude and raw low bits is under 10 bytes).
func (c *tcCore) MaxEncodedLen(rows, cols int) int {
	k := c.sub.Basis.K
	return tcHeader + 2*k*k + k + 12 + rows*(4+10*k)
}

func (c *tcCore) check(n int, ids []int32, rows, cols int) error {
	if cols != c.sub.Basis.D {
		return fmt.Errorf("%w: %d columns, subspace basis width is %d", ErrShape, cols, c.sub.Basis.D)
	}
	if err := checkShape(n, rows, cols); err != nil {
		return err
	}
	if len(ids) != rows {
		return fmt.Errorf("%w: %d ids for %d rows", ErrShape, len(ids), rows)
	}
	return nil
}

// TCEncoder is the sending end of one transform-coded link direction. Use
// one per link direction; it is not safe for concurrent use.
type TCEncoder struct {
	tcCore
	budget *tcBudget
}

// tcBudget steers an encoder's step to a byte budget (SetBudget). Only the
// sender has it: the step of every message is in its payload, so the
// receiver follows whatever the sender chose and needs no state for it.
type tcBudget struct {
	target   float64 // bytes per row, overhead included
	overhead int     // bytes per message outside the payload (frame header, stamp)
	scale    float64 // the step is o.Step × scale
}

// tcScaleMin, tcScaleMax bound the budget's step multiplier, and the step
// stays within the options' range: a budget far below what the signal
// allows then sends at the coarsest step rather than diverging.
const (
	tcScaleMin = 1.0 / 64
	tcScaleMax = 64
)

// SetBudget makes the encoder meet bytesPerRow bytes per row (token) on
// average, counting overhead extra bytes per message (the frame around the
// payload), by steering its step; 0 turns it off (the options' step). The
// controller is deterministic (it sees only the bytes it produced), so a
// redone message codes the same bytes, and its state is in Snapshot.
func (e *TCEncoder) SetBudget(bytesPerRow float64, overhead int) error {
	if bytesPerRow == 0 {
		e.budget = nil
		return nil
	}
	if !(bytesPerRow > 0 && bytesPerRow <= 1<<20) || overhead < 0 {
		return &KeyError{Key: "compression.target_bytes_per_token", Value: bytesPerRow, Allowed: "want a budget in bytes per token > 0"}
	}
	e.budget = &tcBudget{target: bytesPerRow, overhead: overhead, scale: 1}
	return nil
}

// Step is the step (relative to the coefficients' RMS) the next message
// will use.
func (e *TCEncoder) Step() float64 {
	if e.budget == nil {
		return e.o.Step
	}
	return e.o.Step * e.budget.scale
}

// steer moves the budget's step after a message of n bytes and rows rows
// with nonzero non-zero levels. Model: each coefficient coded at level ≠ 0
// costs one bit more per halving of the step, so bytes per row fall by
// about nonzero/rows/8 per doubling; the controller closes half of the gap
// per message (at most a doubling), which converges without overshoot
// where the model holds and more slowly where it overstates the slope.
func (b *tcBudget) steer(step float64, n, rows int, nonzero int64) {
	got := float64(n+b.overhead) / float64(rows)
	slope := max(float64(nonzero)/float64(rows), 1) / 8
	d := max(-1, min(1, 0.5*(got-b.target)/slope))
	b.scale = max(tcScaleMin, min(tcScaleMax, b.scale*math.Exp2(d)))
	// Keep o.Step × scale inside the options' range (0, 16].
	b.scale = min(b.scale, 16/step)
}

// tcBudgetMagic marks the budget's part of an encoder's snapshot.
const tcBudgetMagic = "NBTB"

// Snapshot returns the state, and the budget's step when one is set.
func (e *TCEncoder) Snapshot() []byte {
	b := e.tcCore.Snapshot()
	if e.budget != nil {
		b = append(b, tcBudgetMagic...)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.budget.scale))
	}
	return b
}

// Restore replaces the state (and the budget's step) by a Snapshot's.
func (e *TCEncoder) Restore(b []byte) error {
	scale := 1.0
	if e.budget != nil {
		n := len(tcBudgetMagic) + 8
		if len(b) < n || string(b[len(b)-n:len(b)-8]) != tcBudgetMagic {
			return fmt.Errorf("%w: subspace-tc snapshot: taken without a byte budget, this encoder has one", ErrCorrupt)
		}
		scale = math.Float64frombits(binary.LittleEndian.Uint64(b[len(b)-8:]))
		if !(scale >= tcScaleMin && scale <= tcScaleMax) {
			return fmt.Errorf("%w: subspace-tc snapshot: budget step multiplier %g out of range", ErrCorrupt, scale)
		}
		b = b[:len(b)-n]
	}
	if err := e.tcCore.Restore(b); err != nil {
		return err
	}
	if e.budget != nil {
		e.budget.scale = scale
	}
	return nil
}

// Reset returns the state, and the budget's step, to a new encoder's.
func (e *TCEncoder) Reset() {
	e.tcCore.Reset()
	if e.budget != nil {
		e.budget.scale = 1
	}
}

// NewTCEncoder builds a sender over sub (which fixes U, E0 and the vocab).
func NewTCEncoder(sub *Subspace, dir Direction, o TCOptions) (*TCEncoder, error) {
	c, err := newTCCore(sub, dir, o)
	if err != nil {
		return nil, err
	}
	return &TCEncoder{tcCore: c}, nil
}

// TCDecoder is the receiving end of one transform-coded link direction.
type TCDecoder struct{ tcCore }

// NewTCDecoder builds a receiver; sub and o must match the sender's (o's
// SendIDs and Seed are the sender's business and ignored here).
func NewTCDecoder(sub *Subspace, dir Direction, o TCOptions) (*TCDecoder, error) {
	c, err := newTCCore(sub, dir, o)
	if err != nil {
		return nil, err
	}
	return &TCDecoder{c}, nil
}

// NewTCPair builds the two ends of one link direction from a config, as
// the runtime would: New's subspace (from seed) with the config's keys;
// period is the sequence length of the rows (model.block_size; 0: no
// position predictor). Both ends of a link need the same subspace: a
// runtime builds its own end with NewTCEncoder or NewTCDecoder over the
// stage's *Subspace (NewSubspace(seed, d, rank, vocab, FP32)).
func NewTCPair(cfg Config, d, vocab int, seed uint64, dir Direction, sendIDs bool, period int) (*TCEncoder, *TCDecoder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if cfg.Method != MethodSubspaceTC {
		return nil, nil, fmt.Errorf("%w: compression.method = %q: NewTCPair builds subspace-tc", ErrConfig, cfg.Method)
	}
	if int(cfg.Rank) > d {
		return nil, nil, &KeyError{Key: "compression.rank", Value: cfg.Rank, Allowed: fmt.Sprintf("subspace k must be at most the model width (model.n_embd = %d)", d)}
	}
	sub, err := NewSubspace(seed, d, int(cfg.Rank), vocab, FP32)
	if err != nil {
		return nil, nil, err
	}
	o := TCOptionsFrom(cfg, dir, seed, sendIDs, period)
	e, err := NewTCEncoder(sub, dir, o)
	if err != nil {
		return nil, nil, err
	}
	dd, err := NewTCDecoder(sub, dir, o)
	if err != nil {
		return nil, nil, err
	}
	return e, dd, nil
}

// Stats returns the encoder's running totals.
func (e *TCEncoder) Stats() TCStats { return e.stats }

// Encode appends the payload of x (rows×cols: activations h forward,
// gradients g backward) keyed by ids (len rows: input tokens forward,
// target tokens backward) and advances the state.
func (e *TCEncoder) Encode(dst []byte, x []float32, ids []int32, rows, cols int) ([]byte, error) {
	if err := e.check(len(x), ids, rows, cols); err != nil {
		return dst, fmt.Errorf("subspace-tc: encode: %w", err)
	}
	V := e.sub.Vocab
	for i, t := range ids {
		if t < 0 || int(t) >= V {
			return dst, fmt.Errorf("subspace-tc: encode: row %d: id %d outside vocabulary 0..%d", i, t, V-1)
		}
	}
	k, d := e.sub.Basis.K, e.sub.Basis.D
	n := rows * k
	e.c = resize(e.c, n)
	if e.dir == DirForward {
		e.diff = resize(e.diff, rows*d)
		for i, t := range ids {
			em := e.sub.E0[int(t)*d : (int(t)+1)*d]
			df := e.diff[i*d : (i+1)*d]
			for j, v := range x[i*d : (i+1)*d] {
				df[j] = v - em[j]
			}
		}
		e.sub.Basis.Coeffs(e.c, e.diff, rows)
	} else {
		e.sub.Basis.Coeffs(e.c, x, rows)
	}
	var ss float64
	for i, v := range e.c {
		if !isFinite32(v) {
			return dst, fmt.Errorf("subspace-tc: encode: row %d: %w", i/k, ErrNonFinite)
		}
		ss += float64(v) * float64(v)
	}
	step := e.Step()
	var delta float32
	if n > 0 {
		delta = float32(step * math.Sqrt(ss/float64(n)))
	}
	if !(float64(delta)*tcMaxLevel*float64(k) <= tcLimit/4) {
		return dst, fmt.Errorf("subspace-tc: encode: coefficient RMS %g: %w", math.Sqrt(ss/float64(max(n, 1))), ErrNonFinite)
	}
	st := &e.st
	// Residual, in place: r = c − P[id].
	if e.o.PredictorDecay > 0 {
		for i, t := range ids {
			p := st.pred[int(t)*k : (int(t)+1)*k]
			r := e.c[i*k : (i+1)*k]
			if st.ppos != nil {
				pos := i % e.o.Period
				pp := st.ppos[pos*k : (pos+1)*k]
				for j := range r {
					r[j] -= float32(float64(p[j]) + float64(pp[j]))
				}
				continue
			}
			for j := range r {
				r[j] -= p[j]
			}
		}
	}
	e.stats.Signal += ss
	var rs float64
	for _, v := range e.c {
		rs += float64(v) * float64(v)
	}
	e.stats.Residual += rs
	if delta == 0 && rs > 0 && n > 0 {
		// A zero message after non-zero ones: the step cannot be relative
		// to a signal of 0, or the predictor's guess could not be undone.
		delta = float32(step * math.Sqrt(rs/float64(n)))
		if !(float64(delta)*tcMaxLevel*float64(k) <= tcLimit/4) {
			return dst, fmt.Errorf("subspace-tc: encode: residual RMS %g: %w", math.Sqrt(rs/float64(n)), ErrNonFinite)
		}
	}
	flags := byte(0)
	if e.dir == DirForward {
		flags |= tcFlagForward
	}
	if e.o.SendIDs {
		flags |= tcFlagIDs
	}
	// The sent rotation is fitted to this message's true residuals too
	// (the sender has them), then rounded to what the receiver gets.
	var sendRot bool
	if e.o.Rotation == RotationSent {
		st.accumulateTrue(e.c, rows)
		if st.msgs == 0 || refreshDue(st.msgs, e.o.RotationInterval) {
			e.newRot = st.fitRotation(e.newRot)
			for i, v := range e.newRot {
				e.newRot[i] = float64(F16ToF32(F32ToF16(float32(v))))
			}
			sendRot = true
			flags |= tcFlagRotation
		}
	}
	rot := st.rot
	if sendRot {
		rot = e.newRot
	}
	// z = Rᵀr (sender only: any rounding will do, the levels are sent).
	e.lv = resizeI32(e.lv, n)
	e.acc = resizeF64(e.acc, k)
	g := newRNG(e.o.Seed^st.msgs*0x9e3779b97f4a7c15, "subspace-tc-rounding")
	var inv float64
	if delta > 0 {
		inv = 1 / float64(delta)
	}
	zs := e.c
	if rot != nil {
		// Rm[j][l] = rot[l*k+j]; z (rows×k) = r·Rm through Sgemm.
		e.rm = resize(e.rm, k*k)
		for l := 0; l < k; l++ {
			for j := 0; j < k; j++ {
				e.rm[j*k+l] = float32(rot[l*k+j])
			}
		}
		e.z = resize(e.z, n)
		mulAB(e.z, e.c, e.rm, rows, k, k)
		zs = e.z
	}
	var rbits uint64
	nr := 0
	for i := 0; i < rows; i++ {
		for l, zl := range zs[i*k : (i+1)*k] {
			y := float64(zl) * inv
			var q float64
			if e.dir == DirBackward {
				if nr == 0 {
					rbits, nr = g.next(), 2
				}
				u := float64(uint32(rbits)) * (1.0 / (1 << 32))
				rbits >>= 32
				nr--
				q = math.Floor(y + u)
			} else {
				q = math.RoundToEven(y)
			}
			q = max(-tcMaxLevel, min(tcMaxLevel, q))
			e.lv[i*k+l] = int32(q)
		}
	}
	// One model per rotated dimension.
	e.params = resizeBytes(e.params, k)
	col := make([]int32, rows)
	for l := 0; l < k; l++ {
		for i := 0; i < rows; i++ {
			col[i] = e.lv[i*k+l]
		}
		e.params[l] = tcFitParam(col)
	}
	// The stream: ids, then levels row by row.
	e.syms = e.syms[:0]
	if e.o.SendIDs {
		st.idStart()
		bits := st.idBits()
		prev := int32(-1)
		for _, t := range ids {
			tab := st.idTable(prev)
			f := tab[t+1] - tab[t]
			e.syms = append(e.syms, ransSym{start: tab[t], freq: f, bits: bits})
			e.stats.IDBits += float64(bits) - math.Log2(float64(f))
			prev = t
		}
	}
	for i := 0; i < rows; i++ {
		for l := 0; l < k; l++ {
			if m := tcModelFor(e.params[l]); m != nil {
				e.syms = m.appendLevel(e.syms, e.lv[i*k+l])
			}
		}
	}
	start := len(dst)
	dst = append(dst, flags)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(st.digest))
	dst = appendF32(dst, delta)
	if sendRot {
		for _, v := range e.newRot {
			dst = binary.LittleEndian.AppendUint16(dst, F32ToF16(float32(v)))
		}
	}
	dst = append(dst, e.params...)
	var words []uint32
	mid := len(dst)
	dst = ransEncode(dst, e.syms, &words)
	e.stats.Messages++
	e.stats.Rows += int64(rows)
	e.stats.HeaderBytes += tcHeader
	if sendRot {
		e.stats.RotationBytes += int64(2 * k * k)
	}
	e.stats.ModelBytes += int64(k)
	e.stats.StreamBytes += int64(len(dst) - mid)
	e.stats.Levels += int64(n)
	var nonzero int64
	for _, q := range e.lv {
		if q != 0 {
			nonzero++
		}
	}
	e.stats.NonZero += nonzero
	// Advance the state exactly as the receiver will.
	if err := e.tcCore.commit(flags, ids, delta, rows, sendRot); err != nil {
		return dst[:start], fmt.Errorf("subspace-tc: encode: %w", err)
	}
	if e.budget != nil && rows > 0 {
		e.budget.steer(e.o.Step, len(dst)-start, rows, nonzero)
	}
	return dst, nil
}

// Decode checks the payload against the state, writes the reconstruction
// into dst (rows×cols: h = E0[id] + U·ĉ forward, U·ĉ backward) and advances
// the state. If the payload carries ids they are written into ids;
// otherwise ids must hold them (the receiver's own copy). On any error the
// state is unchanged.
func (dc *TCDecoder) Decode(dst []float32, ids []int32, payload []byte, rows, cols int) error {
	if err := dc.check(len(dst), ids, rows, cols); err != nil {
		return fmt.Errorf("subspace-tc: decode: %w", err)
	}
	if err := dc.parse(ids, payload, rows); err != nil {
		return fmt.Errorf("subspace-tc: decode: %w", err)
	}
	d := dc.sub.Basis.D
	dc.sub.Basis.Expand(dst, dc.chat, rows)
	if dc.dir == DirForward {
		for i, t := range ids {
			em := dc.sub.E0[int(t)*d : (int(t)+1)*d]
			hr := dst[i*d : (i+1)*d]
			for j := range hr {
				hr[j] += em[j]
			}
		}
	}
	return nil
}

func (dc *TCDecoder) parse(ids []int32, payload []byte, rows int) error {
	k := dc.sub.Basis.K
	st := &dc.st
	r := reader{b: payload}
	flags := r.byte("flags")
	sum := r.take(4, "state checksum")
	db := r.take(4, "step")
	if r.err != nil {
		return r.err
	}
	if flags&^(tcFlagForward|tcFlagIDs|tcFlagRotation) != 0 {
		return fmt.Errorf("%w: flags %#x", ErrCorrupt, flags)
	}
	if (flags&tcFlagForward != 0) != (dc.dir == DirForward) {
		return fmt.Errorf("%w: a %v payload on a %v decoder", ErrCorrupt, map[bool]Direction{true: DirForward, false: DirBackward}[flags&tcFlagForward != 0], dc.dir)
	}
	if got := binary.LittleEndian.Uint32(sum); got != uint32(st.digest) {
		return fmt.Errorf("%w: sender's state checksum %08x, receiver's %08x (after %d messages)", ErrDesync, got, uint32(st.digest), st.msgs)
	}
	delta := getF32(db)
	if !(delta >= 0 && float64(delta)*tcMaxLevel*float64(k) <= tcLimit/4) {
		return fmt.Errorf("%w: step %v", ErrCorrupt, delta)
	}
	sendRot := flags&tcFlagRotation != 0
	if sendRot {
		if dc.o.Rotation != RotationSent {
			return fmt.Errorf("%w: a sent rotation on a %v-rotation decoder", ErrCorrupt, dc.o.Rotation)
		}
		rb := r.take(2*k*k, "rotation")
		if r.err != nil {
			return r.err
		}
		dc.newRot = resizeF64(dc.newRot, k*k)
		for i := range dc.newRot {
			v := F16ToF32(binary.LittleEndian.Uint16(rb[2*i:]))
			if !(v >= -1.001 && v <= 1.001) { // entries of an orthonormal matrix
				return fmt.Errorf("%w: rotation entry %d is %v", ErrCorrupt, i, v)
			}
			dc.newRot[i] = float64(v)
		}
	}
	pb := r.take(k, "model bytes")
	if r.err != nil {
		return r.err
	}
	dc.params = resizeBytes(dc.params, k)
	for l, p := range pb {
		if p != 0 && tcModelFor(p) == nil {
			return fmt.Errorf("%w: dimension %d: model byte %#x", ErrCorrupt, l, p)
		}
		dc.params[l] = p
	}
	dec := newRansDec(r.b)
	if dec.bad {
		return fmt.Errorf("%w: rANS stream of %d bytes", ErrCorrupt, len(r.b))
	}
	V := dc.sub.Vocab
	if flags&tcFlagIDs != 0 {
		st.idStart()
		bits := st.idBits()
		prev := int32(-1)
		for i := range ids {
			tab := st.idTable(prev)
			slot := dec.peek(bits)
			t := searchCum(tab, slot)
			dec.advance(tab[t], tab[t+1]-tab[t], bits)
			ids[i] = int32(t)
			prev = int32(t)
		}
	} else {
		for i, t := range ids {
			if t < 0 || int(t) >= V {
				return fmt.Errorf("%w: row %d: id %d outside vocabulary 0..%d (the receiver's own ids)", ErrShape, i, t, V-1)
			}
		}
	}
	n := rows * k
	dc.lv = resizeI32(dc.lv, n)
	for i := 0; i < rows; i++ {
		for l := 0; l < k; l++ {
			m := tcModelFor(dc.params[l])
			if m == nil {
				dc.lv[i*k+l] = 0
				continue
			}
			v, ok := m.readLevel(&dec)
			if !ok || dec.bad {
				return fmt.Errorf("%w: row %d dimension %d: malformed level", ErrCorrupt, i, l)
			}
			dc.lv[i*k+l] = v
		}
	}
	if !dec.end() {
		return fmt.Errorf("%w: rANS stream does not end where the levels do", ErrCorrupt)
	}
	return dc.tcCore.commit(flags, ids, delta, rows, sendRot)
}

// searchCum returns i with cum[i] ≤ slot < cum[i+1] (cum ascending from 0,
// strictly increasing, last entry > slot).
func searchCum(cum []uint32, slot uint32) int {
	lo, hi := 0, len(cum)-2
	for lo < hi {
		mid := int(uint(lo+hi+1) >> 1)
		if cum[mid] <= slot {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// commit computes the decoded coefficients ĉ = P[id] + R·(Δ·levels) into
// chat — with the same operations on both ends — and, if they are within
// bounds, advances the state. It leaves the state untouched on error.
func (c *tcCore) commit(flags byte, ids []int32, delta float32, rows int, sendRot bool) error {
	k := c.sub.Basis.K
	st := &c.st
	rot := st.rot
	if sendRot {
		rot = c.newRot
	}
	c.chat = resize(c.chat, rows*k)
	c.acc = resizeF64(c.acc, k)
	dl := float64(delta)
	usePred := c.o.PredictorDecay > 0
	for i := 0; i < rows; i++ {
		acc := c.acc
		clear(acc)
		lv := c.lv[i*k : (i+1)*k]
		for l, q := range lv {
			if q == 0 {
				continue
			}
			z := float64(float64(q) * dl)
			if rot == nil {
				acc[l] = z
				continue
			}
			ax := rot[l*k : (l+1)*k]
			for j := range acc {
				acc[j] += float64(ax[j] * z)
			}
		}
		out := c.chat[i*k : (i+1)*k]
		var p, pp []float32
		if usePred {
			t := int(ids[i])
			p = st.pred[t*k : (t+1)*k]
			if st.ppos != nil {
				pos := i % c.o.Period
				pp = st.ppos[pos*k : (pos+1)*k]
			}
		}
		for j, a := range acc {
			v := a
			switch {
			case pp != nil:
				v = float64(float64(p[j])+float64(pp[j])) + a
			case p != nil:
				v = float64(p[j]) + a
			}
			if !(math.Abs(v) <= tcLimit) {
				return fmt.Errorf("%w: row %d: decoded coefficient %g out of range", ErrCorrupt, i, v)
			}
			out[j] = float32(v)
		}
	}
	if sendRot {
		st.rot = append(st.rot[:0], c.newRot...)
		st.hashF64(st.rot)
	}
	st.advance(c, flags, ids, delta, rows)
	return nil
}

func resizeI32(b []int32, n int) []int32 {
	if cap(b) < n {
		return make([]int32, n)
	}
	return b[:n]
}

func resizeF64(b []float64, n int) []float64 {
	if cap(b) < n {
		return make([]float64, n)
	}
	return b[:n]
}

func resizeBytes(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
