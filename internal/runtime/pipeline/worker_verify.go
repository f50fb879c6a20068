package pipeline

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
)

// A swarm's spot checks on the worker's side (docs/trust.md). Every
// replica that sends activations keeps the step's frames as they went on
// the wire, so that it can hand one to a checker; every replica that
// receives them reports the FNV-64a of each payload (the codec's bytes:
// in a subspace run, the coefficients and token ids) with its step
// report. Between the report and the apply the driver may ask a sender
// to pass kept frames to other replicas of the next stage
// (ctrlVerifyServe), and a replica to recompute micro-batches from them
// — or, on the first stage, from the batch's tokens — and to say the hash
// of its output encoded as it would have been sent (ctrlVerify). The
// weights have not moved yet, and the kernels are deterministic, so an
// honest output hashes the same bits.

// verifier is a worker's part in the checks.
type verifier struct {
	on   bool
	sent map[int][]byte // micro-batch → the activation frame sent this step
	got  []uint64       // micro-batch → hash of the activation payload received (0: none)
	lie  *lie
	seed uint64
	buf  []float32
}

// lie is a test's liar (faults kind = "lie"): outputs times 1+scale on
// a share of its micro-batches, chosen from the run's seed.
type lie struct {
	share, scale float64
	checks       bool // also in the checks it runs for others
}

func newVerifier(cfg config.Config) verifier {
	return verifier{on: cfg.Verify.Checks(), seed: uint64(cfg.Run.Seed)}
}

// begin starts a step of M micro-batches.
func (v *verifier) begin(M int) {
	if !v.on {
		return
	}
	clear(v.sent)
	if v.sent == nil {
		v.sent = map[int][]byte{}
	}
	v.got = make([]uint64, M)
}

// keep holds a sent activation frame of the step (frames are not reused
// once queued, so no copy).
func (v *verifier) keep(typ wire.Type, step, micro int, frame []byte) {
	if v.on && typ == wire.TypeActivation && step != evalStep {
		v.sent[micro] = frame
	}
}

// received notes the hash of an activation frame's payload as it came.
func (v *verifier) received(m inMsg) {
	if v.on && m.h.Type == wire.TypeActivation && int(m.h.Micro) < len(v.got) {
		v.got[m.h.Micro] = payloadHash(m.payload[stampSize:])
	}
}

// hashes are the step's received hashes for the report (nil: none).
func (v *verifier) hashes() []uint64 {
	for _, h := range v.got {
		if h != 0 {
			return v.got
		}
	}
	return nil
}

// payloadHash is FNV-64a over a tensor's encoded bytes, never 0 (which
// means "not received").
func payloadHash(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return max(h.Sum64(), 1)
}

// lies says whether the liar perturbs micro-batch micro of step: a pure
// function of the run's seed, so a redo lies the same way.
func (l *lie) lies(seed uint64, step, micro int) bool {
	x := seed ^ uint64(step)*0x9e3779b97f4a7c15 ^ uint64(micro)*0xbf58476d1ce4e5b9
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11)/(1<<53) < l.share
}

// perturb is what the liar sends instead of out: a copy, so that its own
// backward stays what it computed.
func (w *Worker) perturb(step, micro int, out []float32) []float32 {
	l := w.vf.lie
	if l == nil || !l.lies(w.vf.seed, step, micro) {
		return out
	}
	w.vf.buf = append(w.vf.buf[:0], out...)
	s := float32(1 + l.scale)
	for i := range w.vf.buf {
		w.vf.buf[i] *= s
	}
	return w.vf.buf
}

// setLie carries out ctrlLie.
func (w *Worker) setLie(m ctrlMsg) (ctrlMsg, error) {
	if w.rep == nil || w.last {
		return ctrlMsg{}, errors.New("lie: only a swarm's replica of a stage that sends activations can lie")
	}
	w.vf.lie = &lie{share: m.Share, scale: float64(m.Scale), checks: m.Checks}
	return ctrlMsg{Kind: ctrlOK}, nil
}

// awaitApply waits for the step's apply, serving the spot checks the
// driver asks for meanwhile.
func (w *Worker) awaitApply(ctx context.Context, step int) (ctrlMsg, error) {
	for {
		var m ctrlMsg
		select {
		case mm, ok := <-w.ctl.ctrlCh:
			if !ok {
				return ctrlMsg{}, errors.New("control link closed")
			}
			m = mm
		case <-ctx.Done():
			return ctrlMsg{}, ctx.Err()
		}
		var rep ctrlMsg
		var err error
		switch m.Kind {
		case ctrlAbort:
			w.ctl.pendingAbort = &m
			return ctrlMsg{}, context.Canceled
		case ctrlApply:
			return m, nil
		case ctrlVerifyServe:
			rep, err = w.serveInputs(ctx, step, m)
		case ctrlVerify:
			rep, err = w.recompute(ctx, step, m)
		default:
			return ctrlMsg{}, fmt.Errorf("control: got %q, want %q", m.Kind, ctrlApply)
		}
		if err != nil {
			return ctrlMsg{}, err
		}
		if err := w.sendCtrl(ctx, rep); err != nil {
			return ctrlMsg{}, err
		}
	}
}

// serveInputs sends the kept activation frame of each micro-batch
// m.Micros[n] to node m.Nodes[n], over their own link.
func (w *Worker) serveInputs(ctx context.Context, step int, m ctrlMsg) (ctrlMsg, error) {
	if len(m.Micros) != len(m.Nodes) {
		return ctrlMsg{}, fmt.Errorf("verify: %d micro-batches for %d nodes", len(m.Micros), len(m.Nodes))
	}
	var n int64
	for k, j := range m.Micros {
		f := w.vf.sent[j]
		if f == nil {
			return ctrlMsg{}, fmt.Errorf("verify: step %d: no activation of micro-batch %d was sent from here", step, j)
		}
		l := w.linkTo(m.Nodes[k])
		if l == nil {
			return ctrlMsg{}, &linkFailure{peer: m.Nodes[k], err: errors.New("no link to the checker")}
		}
		frame := wire.Append(nil, wire.Header{Type: wire.TypeVerify, Stage: uint16(w.id), Step: frameStep(w.ctl.epoch, step), Micro: uint32(j)}, f)
		if err := (sideConn{l}).Send(ctx, frame); err != nil {
			return ctrlMsg{}, err
		}
		n += int64(len(frame))
	}
	return ctrlMsg{Kind: ctrlOK, Count: n}, nil
}

// recompute runs the forward of each micro-batch m.Micros[n] from the
// input node m.Nodes[n] sends (the first stage: the batch's tokens) and
// returns the hashes of the outputs as they would have been sent.
func (w *Worker) recompute(ctx context.Context, step int, m ctrlMsg) (ctrlMsg, error) {
	if len(m.Micros) != len(m.Nodes) || w.last {
		return ctrlMsg{}, fmt.Errorf("verify: %d micro-batches for %d nodes on stage %d", len(m.Micros), len(m.Nodes), w.id)
	}
	N := w.B * w.T
	out := ctrlMsg{Kind: ctrlOK, Hashes: make([]uint64, len(m.Micros))}
	for k, j := range m.Micros {
		if j < 0 || j >= w.M {
			return ctrlMsg{}, fmt.Errorf("verify: micro-batch %d of %d", j, w.M)
		}
		var in []float32
		tok := make([]int32, N)
		if w.first {
			if len(w.rx.batchTok) < (j+1)*N {
				return ctrlMsg{}, fmt.Errorf("verify: step %d: this replica holds no batch", step)
			}
			copy(tok, w.rx.batchTok[j*N:])
		} else {
			from := m.Nodes[k]
			msg, err := w.checkInput(ctx, from, step, j)
			if err != nil {
				return ctrlMsg{}, err
			}
			in = w.buf()
			if _, err := w.decode(w.codec.evalDec, msg, in, tok, N); err != nil {
				w.release(in)
				return ctrlMsg{}, &rejectedFrame{peer: from, err: fmt.Errorf("verify: %w", err)}
			}
			in = in[:N*w.C]
		}
		y, err := w.st.Forward(w.evalSlot, w.B, w.T, tok, in)
		if err != nil {
			return ctrlMsg{}, err
		}
		if l := w.vf.lie; l != nil && l.checks {
			w.vf.buf = append(w.vf.buf[:0], y...)
			for i := range w.vf.buf {
				w.vf.buf[i] *= float32(1 + l.scale)
			}
			y = w.vf.buf
		}
		p, err := w.encodeOut(w.codec.evalEnc, y, tok, N)
		if err != nil {
			return ctrlMsg{}, err
		}
		out.Hashes[k] = payloadHash(p)
		if in != nil {
			w.release(in)
		}
	}
	return out, nil
}

// checkInput waits on the link to node from for the kept activation of
// micro-batch j of step, and unwraps it.
func (w *Worker) checkInput(ctx context.Context, from, step, j int) (inMsg, error) {
	l := w.linkTo(from)
	if l == nil {
		return inMsg{}, &linkFailure{peer: from, err: errors.New("no link to the input's sender")}
	}
	ctx, cancel := context.WithTimeout(ctx, w.net.linkTimeout)
	defer cancel()
	for {
		raw, err := (sideConn{l}).Recv(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			return inMsg{}, &linkFailure{peer: from, silent: w.net.linkTimeout}
		}
		if err != nil {
			return inMsg{}, err
		}
		h, p, err := wire.Decode(raw, transport.MaxMessage)
		if err != nil {
			return inMsg{}, &rejectedFrame{peer: from, err: fmt.Errorf("verify frame: %w", err)}
		}
		if ep, st := splitStep(h.Step); h.Type != wire.TypeVerify || ep != w.ctl.epoch || st != step || int(h.Micro) != j {
			continue // of an aborted attempt
		}
		ih, ip, err := wire.Decode(p, transport.MaxMessage)
		if err != nil || ih.Type != wire.TypeActivation || int(ih.Micro) != j || len(ip) < stampSize {
			return inMsg{}, &rejectedFrame{peer: from, err: fmt.Errorf("verify: the kept input of micro-batch %d is not its activation frame (%v)", j, err)}
		}
		return inMsg{from: l, h: ih, payload: ip, at: time.Now()}, nil
	}
}

// encodeOut encodes x (rows×C) as send does, without its stamp: the
// bytes a receiver hashes. Only stateless codecs run with checks
// (config refuses the others), so the evaluation codec gives the bytes
// the training one would.
func (w *Worker) encodeOut(enc *compression.LinkCodec, x []float32, tokens []int32, rows int) ([]byte, error) {
	var p []byte
	var err error
	if tc, ok := enc.Codec.(compression.TokenCodec); ok {
		p, err = tc.EncodeWithTokens(nil, x, tokens, rows, w.C)
	} else {
		p, _, err = enc.Encode(nil, x, rows, w.C)
	}
	if err != nil {
		return nil, fmt.Errorf("verify: encode: %w", err)
	}
	return p, nil
}
