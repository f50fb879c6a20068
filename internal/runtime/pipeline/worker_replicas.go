package pipeline

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
	"github.com/narrowband/narrowband/scheduler"
)

// A worker's part in a stage held by several replicas (docs/swarm.md,
// scheduler.Replicas): it runs its lane's share of the step's micro-batches
// as an ordinary pipeline stage, and before the optimizer step it sums its
// weight gradients with the stage's other replicas over a chain of links
// among them, so that every replica applies the same step to the same
// weights.

// replicaSet is where a worker sits in a swarm (worker_swarm.go): its
// node, the route of the step in progress, and its place in its stage's
// summing chain.
type replicaSet struct {
	node int // this worker's node: the driver's number for it
	// M is the whole step's micro-batches: losses and gradients are means
	// over all of them, whichever replicas compute them.
	M int
	// route[i][j] is the node computing micro-batch j on stage i this
	// step; chains[i] are stage i's replicas in summing order.
	route, chains [][]int
	// r, R: this replica's place in its chain and the chain's length;
	// lower and upper are the links to replicas r-1 and r+1 of this
	// stage, nil at the chain's ends.
	r, R         int
	lower, upper transport.Conn
	// codec: how the gradients travel in the sum (replica_codec.go).
	codec *replicaCodec
}

// replicaChunk is the floats of one gradient-sum frame: 64 KB, well under
// a data channel's message limit, and small enough that the chain's pass
// up and its pass back down overlap.
const replicaChunk = 16 << 10

// microTotal is the step's micro-batches, over every replica of the stage.
func (w *Worker) microTotal() int {
	if w.rep != nil {
		return w.rep.M
	}
	return w.M
}

// sumReplicas replaces this replica's weight gradients by the sum over
// the stage's replicas, in the chain order of scheduler.Replicas: the
// partial sum of replicas 0..r-1 arrives from below and this replica's
// gradient is added after it; the last replica's total comes back down.
// Every element is summed in that one order, so all replicas end with the
// same bits. What the passes carry and how their chunks are coded is the
// replica codec's ([compression.replicas], replica_codec.go). It returns
// the wire bytes it sent.
func (w *Worker) sumReplicas(ctx context.Context, step int) (int64, error) {
	rp := w.rep
	if rp == nil || rp.R == 1 {
		return 0, nil
	}
	fstep := frameStep(w.ctl.epoch, step)
	rp.codec.begin(step)
	var sent int64
	for pass, k0 := 0, 0; ; pass++ {
		parts, cc, err := rp.codec.pass(pass)
		if err != nil {
			return sent, fmt.Errorf("replica %d: %w", rp.r, err)
		}
		if parts == nil {
			break
		}
		chunks := splitParts(parts)
		n, err := w.chainPass(ctx, fstep, k0, chunks, cc)
		if sent += n; err != nil {
			return sent, err
		}
		k0 += len(chunks)
	}
	rp.codec.finish()
	return sent, nil
}

// chainPass sums chunks (numbered from k0 in their frames) over the chain.
func (w *Worker) chainPass(ctx context.Context, fstep uint64, k0 int, chunks []replicaPart, cc *chainCoder) (int64, error) {
	rp := w.rep
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var sent int64
	// The total coming back down is received (and passed on as it came)
	// beside the pass up: chunk k's total can only arrive after this
	// replica sent its partial sum of chunk k up, so the two never touch
	// the same chunk at once.
	type result struct {
		sent int64
		err  error
	}
	down := make(chan result, 1)
	if rp.upper != nil {
		go func() {
			var res result
			for k, c := range chunks {
				f, err := w.recvReplica(ctx, rp.upper, rp.r+1, fstep, k0+k, c.v, false, cc)
				if res.err = err; err != nil {
					break
				}
				if rp.lower != nil {
					if res.err = rp.lower.Send(ctx, f); res.err != nil {
						res.err = fmt.Errorf("replica %d: pass gradient chunk %d down: %w", rp.r, k0+k, res.err)
						break
					}
					res.sent += int64(len(f))
				}
			}
			down <- res
		}()
	}
	up := func() error {
		for k, c := range chunks {
			if rp.lower != nil {
				if _, err := w.recvReplica(ctx, rp.lower, rp.r-1, fstep, k0+k, c.v, true, cc); err != nil {
					return err
				}
			}
			to := rp.upper
			if to == nil {
				to = rp.lower // the last replica: c is the total, back down
			}
			f, err := cc.frame(w.id, fstep, k0+k, c, rp.upper == nil)
			if err != nil {
				return fmt.Errorf("replica %d: %w", rp.r, err)
			}
			if err := to.Send(ctx, f); err != nil {
				return fmt.Errorf("replica %d: send gradient chunk %d: %w", rp.r, k0+k, err)
			}
			sent += int64(len(f))
		}
		return nil
	}
	err := up()
	if rp.upper == nil {
		return sent, err
	}
	// The pass down must have stopped before this returns: it writes into
	// the gradients, which the next attempt owns.
	if err != nil {
		cancel()
	}
	res := <-down
	if err == nil {
		err = res.err
	}
	return sent + res.sent, err
}

// replicaFrame is chunk k of a raw float32 sum (as the none codec sends it).
func replicaFrame(stage int, fstep uint64, k int, v []float32) []byte {
	p := make([]byte, 0, 4*len(v))
	for _, x := range v {
		p = binary.LittleEndian.AppendUint32(p, math.Float32bits(x))
	}
	return wire.Append(nil, wire.Header{Type: wire.TypeReplicaGrad, Stage: uint16(stage), Step: fstep, Micro: uint32(k)}, p)
}

// recvReplica reads chunk k of this attempt's sum from replica from into
// dst: added before dst's own values (add, on the way up: the partial sum
// of the replicas below comes first) or in place of them (the total, on
// the way down), decoded by cc. It returns the frame, which the pass down
// hands on as it came. Frames of an aborted attempt are skipped; anything
// else out of place is an error, never a panic.
func (w *Worker) recvReplica(ctx context.Context, c transport.Conn, from int, fstep uint64, k int, dst []float32, add bool, cc *chainCoder) ([]byte, error) {
	epoch, _ := splitStep(fstep) // not w.ctl's: the pass down reads it beside the worker's loop
	for {
		raw, err := c.Recv(ctx)
		if err != nil {
			return nil, fmt.Errorf("replica %d of stage %d: link from replica %d: %w", w.rep.r, w.id, from, err)
		}
		h, p, err := wire.Decode(raw, transport.MaxMessage)
		if err != nil {
			return nil, fmt.Errorf("replica %d of stage %d: bad gradient frame from replica %d: %w", w.rep.r, w.id, from, err)
		}
		if h.Type == wire.TypeHeartbeat {
			continue
		}
		if ep, _ := splitStep(h.Step); h.Type == wire.TypeReplicaGrad && ep < epoch {
			continue // of an aborted attempt
		}
		if h.Type != wire.TypeReplicaGrad || h.Step != fstep || int(h.Micro) != k || int(h.Stage) != w.id {
			_, st := splitStep(h.Step)
			_, want := splitStep(fstep)
			return nil, fmt.Errorf("replica %d of stage %d: got a %v frame of stage %d step %d chunk %d from replica %d, want gradient chunk %d of step %d", w.rep.r, w.id, h.Type, h.Stage, st, h.Micro, from, k, want)
		}
		if id := cc.method.ChunkID(); h.Codec != uint8(id) {
			return nil, fmt.Errorf("replica %d of stage %d: gradient chunk %d from replica %d is coded %v, want %v (compression.replicas.method = %q on every replica)", w.rep.r, w.id, k, from, compression.ID(h.Codec), id, cc.method)
		}
		if err := cc.decode(dst, p, add); err != nil {
			return nil, fmt.Errorf("replica %d of stage %d: gradient chunk %d from replica %d: %w", w.rep.r, w.id, k, from, err)
		}
		return raw, nil
	}
}

// replicaSpan is the timeline's name for the gradient sum.
const replicaSpan = "replica_sum"

// timedSum is sumReplicas with its span on the timeline and its bytes and
// time in the step's statistics.
func (w *Worker) timedSum(ctx context.Context, step int) error {
	if w.rep == nil || w.rep.R == 1 {
		return nil
	}
	t := time.Now()
	n, err := w.sumReplicas(ctx, step)
	w.stats.SentReplicaBytes += n
	w.stats.RawReplicaBytes += w.rep.rawBytes()
	w.span(replicaSpan, -1, t)
	if err != nil {
		return fmt.Errorf("step %d: sum gradients with the stage's replicas: %w", step, err)
	}
	return nil
}

// stateReply answers a state request: the state blob, and for a replica
// its digest (alone if the driver asked for the digest only: it compares
// the replicas of a stage, and needs one copy of the state).
func (w *Worker) stateReply(m ctrlMsg, step int, blob []byte) ctrlMsg {
	out := ctrlMsg{Kind: ctrlStateIs, OptimStep: step, blob: blob}
	if w.rep != nil {
		h := fnv.New64a()
		h.Write(blob)
		out.Hash = h.Sum64()
		if m.HashOnly {
			out.blob = nil
		}
	}
	return out
}

// NewReplica builds the worker of replica r of stage id in the lanes of
// the initial plan (scheduler.Replicas: nodes numbered r·S + i), linked to
// its lane by links and to its stage's replicas r-1 and r+1 by lower and
// upper (nil at the chain's ends): the links of stage processes and
// WebRTC peers, which join each replica to its lane's neighbours only, so
// such runs route by lanes. With one replica a stage it is NewWorker.
func NewReplica(cfg config.Config, layout scheduler.Layout, id, r int, links Links, lower, upper transport.Conn) (*Worker, error) {
	plan, err := replicaPlan(cfg, layout)
	if err != nil {
		return nil, err
	}
	if plan == nil {
		if r != 0 || lower != nil || upper != nil {
			return nil, fmt.Errorf("stage %d: replica %d, but pipeline.replicas = 1", id, r)
		}
		return NewWorker(cfg, layout, id, links)
	}
	if r < 0 || r >= plan.Count() {
		return nil, fmt.Errorf("stage %d: replica %d of %d", id, r, plan.Count())
	}
	if (r > 0) != (lower != nil) || (r+1 < plan.Count()) != (upper != nil) {
		return nil, fmt.Errorf("stage %d replica %d of %d: a chain link is missing or extra", id, r, plan.Count())
	}
	mesh := map[int]transport.Conn{}
	add := func(i, rr int, c transport.Conn) {
		if c != nil {
			mesh[plan.Worker(i, rr)] = c
		}
	}
	add(layout.Prev(id), r, links.Prev)
	add(layout.Next(id), r, links.Next)
	if t := layout.Tied(id); t >= 0 {
		add(t, r, links.Tied)
	}
	add(id, r-1, lower)
	add(id, r+1, upper)
	return NewSwarmWorker(cfg, layout, id, plan.Worker(id, r), links.Ctrl, mesh)
}

// ShapeReplicaLink shapes what replica from of stage sends to replica to
// over c: with the run's base profile (a replica link is one more home
// link between two peers; no per-link override names one), and a seed of
// its own per direction.
func ShapeReplicaLink(cfg config.Config, stage, from, to int, c transport.Conn) (transport.Conn, error) {
	prof := cfg.LinkProfile(-1, -1)
	if !prof.Shaped() {
		return c, nil
	}
	seed := uint64(cfg.Run.Seed) ^ (0x5e9<<32 | uint64(stage)<<16 | uint64(from)<<8 | uint64(to))
	return transport.Shape(c, prof, transport.ShapeOptions{Seed: seed, CloseGrace: -1})
}
