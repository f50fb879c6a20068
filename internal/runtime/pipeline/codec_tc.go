package pipeline

import (
	"errors"
	"fmt"
	"math"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/wire"
	"github.com/narrowband/narrowband/stages"
)

// tcLinks are a stage's ends of the transform codec (compression.method =
// "subspace-tc"): unlike the other codecs it keeps state at both ends of
// every link direction (closed-loop predictors, the derived rotation, the
// id model), so the two ends must see the same messages in the same order
// and roll back together. How the worker keeps them in step:
//
//   - Each link is ordered and the schedule fixes the order of a
//     direction's messages, so sender and receiver advance through the
//     same sequence; a lost, duplicated or reordered message shows as the
//     payload's state checksum disagreeing (compression.ErrDesync), which
//     the worker treats as a bad frame: the attempt is aborted and redone.
//   - At the start of every step each end keeps a snapshot of its coders;
//     an aborted attempt's redo restores it first (begin), so the redone
//     messages code the same bytes as a clean run's.
//   - The coders' state goes with the stage's weights into every snapshot
//     and checkpoint (as optim.codec.* tensors, so it is training state,
//     not weights), and a restore puts it back: a rollback, a spare taking
//     over a stage, and a resume all continue the codec exactly.
//   - Evaluation has coders of its own, restored from the training ones
//     at the start of every evaluation, so it never moves the training
//     state and both ends start it from the same point.
//
// Token ids travel only where the receiver lacks them: forward into the
// last stage (which holds the batch's tokens for its loss) they are not
// sent, elsewhere they are entropy-coded in the payload; backward, the
// gradient of a row is predicted from its target id, which the first stage
// holds and every later stage learns from the gradient message it receives
// (the last stage from its batch), so ids go on every backward link except
// the one into the first stage.
type tcLinks struct {
	sub              *compression.Subspace
	encNext, evalEnc *compression.TCEncoder // activations to the next stage
	decPrev, evalDec *compression.TCDecoder // activations from the previous stage
	encPrev          *compression.TCEncoder // gradients to the previous stage
	decNext          *compression.TCDecoder // gradients from the next stage

	held int // the step whose start snapshot is in snap, -1 for none
	snap [][]byte
	note *metrics.Event // a reset to report with the next step
	// reported: the budget-steered step last reported per encoder (nil
	// without compression.target_bytes_per_token).
	reported map[*compression.TCEncoder]float64
	target   float64
}

// tcRole names one coder of a stage in snapshots.
type tcRole struct {
	name string
	c    interface {
		Snapshot() []byte
		Restore([]byte) error
		Reset()
	}
}

// newTCLinks builds stage id's coders for a run of S stages.
func newTCLinks(cfg config.Config, id, S int) (*tcLinks, error) {
	cc := cfg.Compression
	d, k, V := cfg.Model.NEmbd, int(cc.Rank), cfg.Model.VocabSize
	if k > d {
		return nil, &compression.KeyError{Key: "compression.rank", Value: cc.Rank, Allowed: fmt.Sprintf("subspace k must be at most the model width (model.n_embd = %d)", d)}
	}
	seed := uint64(cfg.Run.Seed)
	// The same basis and E0 as the subspace codec's: the constraint keeps
	// the residual stream in span(U) either way.
	sub, err := compression.NewSubspace(seed, d, k, V, compression.FP32)
	if err != nil {
		return nil, err
	}
	t := &tcLinks{sub: sub, held: -1}
	opts := func(dir compression.Direction, sendIDs bool) compression.TCOptions {
		return compression.TCOptionsFrom(cc, dir, seed, sendIDs, cfg.Model.BlockSize)
	}
	if id+1 < S {
		// Forward to stage id+1: ids unless it is the last stage.
		o := opts(compression.DirForward, id+1 != S-1)
		if t.encNext, err = compression.NewTCEncoder(sub, compression.DirForward, o); err != nil {
			return nil, err
		}
		if t.evalEnc, err = compression.NewTCEncoder(sub, compression.DirForward, o); err != nil {
			return nil, err
		}
		// Gradients from stage id+1: ids unless this is the first stage.
		if t.decNext, err = compression.NewTCDecoder(sub, compression.DirBackward, opts(compression.DirBackward, id != 0)); err != nil {
			return nil, err
		}
	}
	if id > 0 {
		o := opts(compression.DirForward, id != S-1)
		if t.decPrev, err = compression.NewTCDecoder(sub, compression.DirForward, o); err != nil {
			return nil, err
		}
		if t.evalDec, err = compression.NewTCDecoder(sub, compression.DirForward, o); err != nil {
			return nil, err
		}
		if t.encPrev, err = compression.NewTCEncoder(sub, compression.DirBackward, opts(compression.DirBackward, id-1 != 0)); err != nil {
			return nil, err
		}
	}
	if b := cc.TargetBytesPerToken; b > 0 {
		// Frames are counted whole: the wire header and the clock stamp
		// are part of what the budget pays for.
		for _, e := range []*compression.TCEncoder{t.encNext, t.evalEnc, t.encPrev} {
			if e != nil {
				if err := e.SetBudget(b, wire.HeaderSize+stampSize); err != nil {
					return nil, err
				}
			}
		}
		t.reported, t.target = map[*compression.TCEncoder]float64{}, b
	}
	return t, nil
}

// stepMoved reports an encoder's step when a byte budget has moved it by
// more than 10% since it was last reported (each message nudges it; the
// events say where it went, not every nudge).
func (t *tcLinks) stepMoved(e *compression.TCEncoder) (float64, bool) {
	if t.reported == nil || e == t.evalEnc {
		return 0, false
	}
	s, last := e.Step(), t.reported[e]
	if last != 0 && math.Abs(s-last) <= 0.1*last {
		return 0, false
	}
	t.reported[e] = s
	return s, true
}

// roles are the training coders this stage has, in a fixed order.
func (t *tcLinks) roles() []tcRole {
	var r []tcRole
	if t.encNext != nil {
		r = append(r, tcRole{"enc_next", t.encNext}, tcRole{"dec_next", t.decNext})
	}
	if t.decPrev != nil {
		r = append(r, tcRole{"dec_prev", t.decPrev}, tcRole{"enc_prev", t.encPrev})
	}
	return r
}

// begin is called at the start of every attempt at step: the first attempt
// keeps a snapshot of the coders, a redo restores it, so a redone message
// codes exactly what the clean run's did.
func (t *tcLinks) begin(step int) error {
	rs := t.roles()
	if t.held == step {
		for i, r := range rs {
			if err := r.c.Restore(t.snap[i]); err != nil {
				return fmt.Errorf("subspace-tc: restore the %s coder for the redo of step %d: %w", r.name, step, err)
			}
		}
		return nil
	}
	t.snap = t.snap[:0]
	for _, r := range rs {
		t.snap = append(t.snap, r.c.Snapshot())
	}
	t.held = step
	return nil
}

// forEval starts an evaluation: the eval coders take the training coders'
// state (both ends do so at the same step boundary).
func (t *tcLinks) forEval() error {
	if t.evalEnc != nil {
		if err := t.evalEnc.Restore(t.encNext.Snapshot()); err != nil {
			return fmt.Errorf("subspace-tc: eval coder: %w", err)
		}
	}
	if t.evalDec != nil {
		if err := t.evalDec.Restore(t.decPrev.Snapshot()); err != nil {
			return fmt.Errorf("subspace-tc: eval coder: %w", err)
		}
	}
	return nil
}

// tcTensorPrefix starts the names of the coders' state in a run's state.
const tcTensorPrefix = "optim.codec."

func tcTensorName(stage int, role string) string {
	return fmt.Sprintf("%ss%d.%s", tcTensorPrefix, stage, role)
}

// tensors returns stage's coder state as tensors for a snapshot or a
// checkpoint: each snapshot's bytes two per value (as integers 0..65535,
// exact and finite in float32, which the state file's checks require),
// after two values holding the byte count.
func (t *tcLinks) tensors(stage int) []stages.Tensor {
	var ts []stages.Tensor
	for _, r := range t.roles() {
		b := r.c.Snapshot()
		data := make([]float32, 2+(len(b)+1)/2)
		data[0], data[1] = float32(len(b)&0xffff), float32(len(b)>>16)
		for i := 0; i < len(b); i += 2 {
			v := uint16(b[i])
			if i+1 < len(b) {
				v |= uint16(b[i+1]) << 8
			}
			data[2+i/2] = float32(v)
		}
		ts = append(ts, stages.Tensor{Name: tcTensorName(stage, r.name), Shape: []int{len(data)}, Data: data})
	}
	return ts
}

// errTCStateMissing: a state without this stage's coder state (saved by a
// run with another codec or split).
var errTCStateMissing = errors.New("the state has no transform-codec state for this stage")

// restore puts stage's coder state back from ts. A state without it, or
// with state of other settings, is an error: the caller resets the coders
// (every stage of the run finds the same, so both ends of each link reset
// together).
func (t *tcLinks) restore(ts []stages.Tensor, stage int) error {
	t.held = -1
	byName := map[string][]float32{}
	for _, x := range ts {
		byName[x.Name] = x.Data
	}
	for _, r := range t.roles() {
		data, ok := byName[tcTensorName(stage, r.name)]
		if !ok {
			return errTCStateMissing
		}
		b, err := unpackTC(data)
		if err != nil {
			return fmt.Errorf("%s: %w", tcTensorName(stage, r.name), err)
		}
		if err := r.c.Restore(b); err != nil {
			return fmt.Errorf("%s: %w", tcTensorName(stage, r.name), err)
		}
	}
	return nil
}

// reset starts every training coder afresh (the eval ones follow them at
// the next evaluation).
func (t *tcLinks) reset() {
	t.held = -1
	for _, r := range t.roles() {
		r.c.Reset()
	}
}

func unpackTC(data []float32) ([]byte, error) {
	if len(data) < 2 {
		return nil, errors.New("coder state too short")
	}
	for _, v := range data {
		if v != float32(uint16(v)) || v < 0 {
			return nil, errors.New("coder state holds a value that is not a 16-bit integer (corrupt)")
		}
	}
	n := int(data[0]) | int(data[1])<<16
	if (n+1)/2 != len(data)-2 {
		return nil, fmt.Errorf("coder state says %d bytes but holds %d values", n, len(data)-2)
	}
	b := make([]byte, n)
	for i := range b {
		v := uint16(data[2+i/2])
		b[i] = byte(v >> (8 * (i % 2)))
	}
	return b, nil
}

// tcEncoderFor is the coder that sends a frame of type typ at step.
func (t *tcLinks) encoderFor(typ wire.Type, step int) *compression.TCEncoder {
	switch {
	case typ == wire.TypeGradient:
		return t.encPrev
	case step == evalStep:
		return t.evalEnc
	}
	return t.encNext
}

// decoderFor is the coder that decodes frame m.
func (t *tcLinks) decoderFor(m inMsg) *compression.TCDecoder {
	_, step := splitStep(m.h.Step)
	switch {
	case m.h.Type == wire.TypeGradient:
		return t.decNext
	case step == evalStep:
		return t.evalDec
	}
	return t.decPrev
}
