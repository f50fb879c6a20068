package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
	"github.com/narrowband/narrowband/scheduler"
)

// A worker in a swarm (docs/swarm.md): one of the replicas of its stage,
// known by its node number. The driver sends every step's route with the
// step: which node computes each micro-batch on each stage (the
// membership machine's Route: round-robin, or by measured rate), and each
// stage's replicas in summing order. The worker runs its micro-batches in
// its stage's order (StageMachine.Restrict), sends each activation to the
// node the route names on the next stage and each gradient to the one on
// the previous stage, sums its weight gradients along its stage's chain,
// and then, on the first and last stage, exchanges the summed tied
// embedding gradient with a replica of the other end. Its links are keyed
// by node, not by stage.

// NewSwarmWorker builds the worker of node, a replica of stage id of a
// run with pipeline.replicas > 1, linked to the driver by ctrl and to
// other nodes by mesh (node → link): every node it may exchange
// activations, gradients, gradient sums or the tied gradient with.
func NewSwarmWorker(cfg config.Config, layout scheduler.Layout, id, node int, ctrl transport.Conn, mesh map[int]transport.Conn) (*Worker, error) {
	if cfg.Pipeline.Schedule == scheduler.Async {
		return nil, fmt.Errorf("stage %d: pipeline.replicas does not run under pipeline.schedule = \"async\"", id)
	}
	w, err := NewWorker(cfg, layout, id, Links{Ctrl: ctrl, Mesh: mesh})
	if err != nil {
		return nil, err
	}
	// Links are by node: stage numbers would name the wrong ones.
	w.net.prevID, w.net.nextID, w.net.tiedID = -1, -1, -1
	w.rep = &replicaSet{node: node, M: cfg.Train.MicroBatches, R: 1}
	if w.rep.codec, err = newReplicaCodec(cfg.Compression.Replicas, uint64(cfg.Run.Seed), w); err != nil {
		return nil, err
	}
	w.vf = newVerifier(cfg)
	return w, nil
}

// SetDial sets how a swarm's worker links to a node that joins (WebRTC: a
// new ICE session to it through signaling); without one it cannot.
func (w *Worker) SetDial(f func(ctx context.Context, node, stage int, peer string) (transport.Conn, error)) {
	w.dial = f
}

// linkToJoiner carries out ctrlLinkTo: link to node m.Peer, which joins
// the swarm.
func (w *Worker) linkToJoiner(ctx context.Context, m ctrlMsg) (ctrlMsg, error) {
	if w.rep == nil || w.dial == nil || len(m.Peers) != 1 || m.Peer < 0 {
		return ctrlMsg{}, fmt.Errorf("link to node %d: this worker cannot dial joiners", m.Peer)
	}
	// A joiner that never comes (its setup failed) must not hold this
	// replica: the driver waits for the answer.
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := w.dial(dctx, m.Peer, m.PeerStage, m.Peers[0])
	if err != nil {
		return ctrlMsg{}, &linkFailure{peer: m.Peer, err: fmt.Errorf("link to a joiner: %w", err)}
	}
	if old := w.linkTo(m.Peer); old != nil {
		w.detach(old)
	}
	w.AddLink(m.Peer, c)
	return ctrlMsg{Kind: ctrlOK}, nil
}

// AddLink links the running worker to node over c (a replica that
// joined the swarm): it is attached as the links it started with are.
func (w *Worker) AddLink(node int, c transport.Conn) {
	w.attach(w.net.runCtx, node, c)
}

// routeStep takes the step's route: the machine runs this node's
// micro-batches, and the chain links are this step's neighbours.
func (w *Worker) routeStep(cmd ctrlMsg) error {
	rp := w.rep
	if err := checkRoute(cmd.Route, cmd.Chains, w.S, w.M); err != nil {
		return err
	}
	mine := make([]bool, w.M)
	n := 0
	for j, k := range cmd.Route[w.id] {
		if mine[j] = k == rp.node; mine[j] {
			n++
		}
	}
	pos := slices.Index(cmd.Chains[w.id], rp.node)
	if pos < 0 {
		return fmt.Errorf("node %d is not among stage %d's replicas %v", rp.node, w.id, cmd.Chains[w.id])
	}
	restrict := w.sm.Restrict
	if isLanes(cmd.Route, cmd.Chains) {
		restrict = w.sm.RestrictLane
	}
	if err := restrict(mine); err != nil {
		return err
	}
	rp.route, rp.chains = cmd.Route, cmd.Chains
	// A node gone for good (dead, left, dropped): its link goes, so that
	// its silence or its closing is no failure of this step. (A node in
	// no chain may be a joiner syncing from this one: it stays.)
	for _, k := range cmd.Gone {
		if l := w.linkTo(k); l != nil {
			w.detach(l)
			delete(w.replayTo, k)
		}
	}
	rp.r, rp.R = pos, len(cmd.Chains[w.id])
	rp.lower, rp.upper = nil, nil
	chain := cmd.Chains[w.id]
	var err error
	if pos > 0 {
		if rp.lower, err = w.sideOf(chain[pos-1]); err != nil {
			return err
		}
	}
	if pos+1 < len(chain) {
		if rp.upper, err = w.sideOf(chain[pos+1]); err != nil {
			return err
		}
	}
	w.stats.Micros = n
	return nil
}

// isLanes reports whether a route is lanes: as many replicas on every
// stage, and each micro-batch at the same place in every stage's chain.
// Every worker decides it from the same route, so all agree.
func isLanes(route, chains [][]int) bool {
	for i := range chains {
		if len(chains[i]) != len(chains[0]) {
			return false
		}
	}
	for j := range route[0] {
		at := slices.Index(chains[0], route[0][j])
		for i := range route {
			if slices.Index(chains[i], route[i][j]) != at {
				return false
			}
		}
	}
	return true
}

// checkRoute refuses a route that does not fit the run (a driver bug or a
// hostile control message): it must never index out of range.
func checkRoute(route, chains [][]int, S, M int) error {
	if len(route) != S || len(chains) != S {
		return fmt.Errorf("route of %d stages and %d chains for %d stages", len(route), len(chains), S)
	}
	for i := range route {
		if len(route[i]) != M {
			return fmt.Errorf("stage %d's route has %d micro-batches, the step %d", i, len(route[i]), M)
		}
		if len(chains[i]) == 0 {
			return fmt.Errorf("stage %d has no replica", i)
		}
		for _, k := range route[i] {
			if !slices.Contains(chains[i], k) {
				return fmt.Errorf("stage %d's route names node %d, not one of its replicas %v", i, k, chains[i])
			}
		}
	}
	return nil
}

// sideOf is the link to node as the chain sum reads it: its gradient-sum
// frames, apart from the step's inbox.
func (w *Worker) sideOf(node int) (transport.Conn, error) {
	l := w.linkTo(node)
	if l == nil {
		return nil, fmt.Errorf("no link to node %d, the next in this stage's chain", node)
	}
	return sideConn{l}, nil
}

// nextOf and prevOf are where micro-batch micro's activation and gradient
// go: the next and previous stage, or in a swarm the node the route names
// there.
func (w *Worker) nextOf(micro int) int {
	if w.rep != nil && w.rep.route != nil && !w.last {
		return w.rep.route[w.id+1][micro]
	}
	return w.net.nextID
}

func (w *Worker) prevOf(micro int) int {
	if w.rep != nil && w.rep.route != nil && !w.first {
		return w.rep.route[w.id-1][micro]
	}
	return w.net.prevID
}

// evalNext is where evaluation's activations go: the next stage's first
// replica (replicas hold the same weights; one lane evaluates).
func (w *Worker) evalNext() int {
	if w.rep != nil && w.rep.chains != nil && !w.last {
		return w.rep.chains[w.id+1][0]
	}
	return w.net.nextID
}

// statsPeer is the link whose path and round trip a step reports.
func (w *Worker) statsPeer() int {
	if w.rep != nil && w.rep.chains != nil {
		if !w.last {
			return w.rep.chains[w.id+1][0]
		}
		return -1
	}
	return w.net.nextID
}

// tiedTo are the nodes this end sends its tied-embedding gradient to:
// the other end's stage, or in a swarm the replicas of the other end that
// take theirs from this one (tiedPeers).
func (w *Worker) tiedTo() []int {
	if w.rep == nil || w.rep.chains == nil {
		return []int{w.net.tiedID}
	}
	to, _ := w.tiedPeers()
	return to
}

// tiedPeers pairs the replicas of the two ends of the tied embedding,
// whatever their numbers: replica a of the first stage's chain takes the
// last stage's sum from that chain's replica a mod R_last, and replica b
// of the last stage's from the first chain's b mod R_first. Each end's
// replicas hold the same summed gradient, so every replica adds the same
// two values: E + H on the first stage and H + E on the last, the same
// bits (IEEE addition commutes).
func (w *Worker) tiedPeers() (to []int, from int) {
	rp := w.rep
	mine, other := rp.chains[0], rp.chains[w.S-1]
	if w.last {
		mine, other = other, mine
	}
	a := slices.Index(mine, rp.node)
	for b, k := range other {
		if b%len(mine) == a {
			to = append(to, k)
		}
	}
	return to, other[a%len(other)]
}

// tiedWaitSpan is the timeline's name for a swarm end's wait for the other
// end's tied-embedding gradient.
const tiedWaitSpan = "tied_wait"

// swarmTied is a swarm's tied-embedding exchange, after the stage's sum:
// this end sends its summed gradient (or its coefficients, as sendTied
// codes it) to its partners and adds the one it takes from its own.
func (w *Worker) swarmTied(ctx context.Context, step int) error {
	if w.rep == nil || w.S == 1 || !(w.first || w.last) || w.codec.untied {
		return nil
	}
	if err := w.sendTied(step); err != nil {
		return err
	}
	// Inside the optimizer's span, as the sum is: its own span lets a
	// measurement of compute (simulate) take the wait out.
	t := time.Now()
	for !w.sm.HasEmbeddingGrad() {
		if err := w.take(ctx); err != nil {
			return fmt.Errorf("step %d: waiting for the tied-embedding gradient: %w", step, err)
		}
	}
	w.span(tiedWaitSpan, -1, t)
	w.addTied()
	return nil
}

// addTied adds the other end's tied-embedding gradient (w.rx.tiedIn) to
// this end's as sent: the first stage's plus the last's at both ends, so
// the two copies of the embedding stay bit-identical (IEEE addition
// commutes).
func (w *Worker) addTied() {
	g := w.st.TiedWeight().Grad
	own := g
	if w.codec.con != nil {
		own = w.codec.tiedOwn // this end's coefficients, as sent
	}
	if w.first {
		for i := range own {
			own[i] += w.rx.tiedIn[i]
		}
	} else {
		for i := range own {
			own[i] = w.rx.tiedIn[i] + own[i]
		}
	}
	if w.codec.con != nil {
		w.codec.con.expand(g, own) // the projected sum, identical at both ends
	}
}

// fromRoute refuses a tensor frame from a node the route does not name
// for it: a misrouted or forged frame must not reach the model.
func (w *Worker) fromRoute(m inMsg) error {
	rp := w.rep
	if rp == nil || rp.route == nil {
		return nil
	}
	j := int(m.h.Micro)
	var want int
	switch m.h.Type {
	case wire.TypeActivation:
		if w.first || j >= w.M {
			return nil // refused below
		}
		want = rp.route[w.id-1][j]
	case wire.TypeGradient:
		if w.last || j >= w.M {
			return nil
		}
		want = rp.route[w.id+1][j]
	case wire.TypeTiedGrad:
		_, want = w.tiedPeers()
	default:
		return nil
	}
	if m.from.peer != want {
		return fmt.Errorf("%v frame of micro-batch %d from node %d, but the route names node %d", m.h.Type, j, m.from.peer, want)
	}
	return nil
}

// sideConn is a link as the chain sum uses it: Send queues a frame on the
// link, Recv takes the next gradient-sum frame that arrived on it.
type sideConn struct{ l *link }

// A closed link is a linkFailure naming the node at its far end, so that
// the driver drops that node, not this one.
func (c sideConn) Send(ctx context.Context, msg []byte) error {
	if err := push(ctx, c.l, msg); err != nil && ctx.Err() == nil {
		return &linkFailure{peer: c.l.peer, err: err}
	}
	return ctx.Err()
}

func (c sideConn) Recv(ctx context.Context) ([]byte, error) {
	select {
	case raw, ok := <-c.l.side:
		if !ok {
			return nil, &linkFailure{peer: c.l.peer, err: errors.New("the link closed")}
		}
		return raw, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c sideConn) Close() error           { return nil }
func (c sideConn) Stats() transport.Stats { return c.l.conn.Stats() }
