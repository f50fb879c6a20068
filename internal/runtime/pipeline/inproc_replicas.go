package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
)

// SwarmPlacement is a Placement whose swarm can grow while it runs
// (docs/swarm.md, "Joining"): peers that join are claimed as spares are,
// then set up as a new node of a stage, linked to the nodes they will
// exchange tensors with.
type SwarmPlacement interface {
	Placement
	// StartPeer starts a peer of this run's own that joins it (a
	// [[faults.event]] of kind "join") and returns its name; it appears
	// among Spares.
	StartPeer(ctx context.Context) (string, error)
	// SetupReplica makes the peer claimed on c node of stage, linked to
	// every node in peers.
	SetupReplica(ctx context.Context, c transport.Conn, stage, node int, peers map[int]SwarmPeer) error
	// DialsPeers reports whether the nodes a joiner links to must each
	// be told to link to it (ctrlLinkTo), as both ends of a WebRTC link
	// open it.
	DialsPeers() bool
}

// SwarmPeer is a node a joiner links to: its holder and stage.
type SwarmPeer struct {
	Name  string
	Stage int
}

// inSwarm is InProcess for stages held by several replicas: S·R swarm
// workers (NewSwarmWorker) in goroutines, each linked by pipes to every
// worker it may exchange anything with whatever the route: the replicas of
// the stages beside its own, of its own stage (the summing chain), and of
// the other end of the tied embedding. Routes and chains change as
// replicas come and go; the links are all there, and a peer that joins
// gets its own. Nodes are numbered as scheduler.Replicas numbers workers:
// the first replicas, in stage order, are "stage-0" … "stage-{S-1}", as
// without replicas.
type inSwarm struct {
	inProcess
	cfg    config.Config
	layout scheduler.Layout
	ctx    context.Context

	mu      sync.Mutex
	workers map[string]*Worker            // holder → its worker (set up)
	stop    map[string]context.CancelFunc // holder → ends its worker
	ends    map[string]transport.Conn     // holder → its end of the control link
	spares  []string                      // started, not claimed yet
	claimed map[transport.Conn]string     // claimed, not set up: the driver's end → the peer
	ctrlEnd map[string]transport.Conn     // claimed, not set up: the worker's control end
	nodes   map[int]string                // node → holder
	stageOf map[string]int                // holder → stage
	started int
}

func inProcessReplicas(cfg config.Config, layout scheduler.Layout) (Placement, error) {
	plan, err := replicaPlan(cfg, layout)
	if err != nil {
		return nil, err
	}
	S, R := plan.Stages(), plan.Count()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inSwarm{cfg: cfg, layout: layout, ctx: ctx,
		workers: map[string]*Worker{}, stop: map[string]context.CancelFunc{}, ends: map[string]transport.Conn{},
		claimed: map[transport.Conn]string{}, ctrlEnd: map[string]transport.Conn{}, nodes: map[int]string{}, stageOf: map[string]int{}}
	p.cancel = cancel
	ctrl := make([]transport.Conn, S*R)
	mesh := make([]map[int]transport.Conn, S*R)
	for k := range mesh {
		a, b := p.pipe()
		p.ctrl = append(p.ctrl, a)
		ctrl[k] = b
		mesh[k] = map[int]transport.Conn{}
		i, r := plan.StageOf(k), plan.ReplicaOf(k)
		name := fmt.Sprintf("stage-%d", i)
		if r > 0 {
			name = fmt.Sprintf("stage-%d-replica-%d", i, r)
		}
		p.holders = append(p.holders, name)
		p.nodes[k], p.stageOf[name] = name, i
	}
	for a := range mesh {
		for b := a + 1; b < len(mesh); b++ {
			if !p.linked(plan.StageOf(a), plan.StageOf(b)) {
				continue
			}
			if mesh[a][b], mesh[b][a], err = p.link(plan.StageOf(a), plan.StageOf(b), plan.ReplicaOf(a), plan.ReplicaOf(b)); err != nil {
				p.Close()
				return nil, err
			}
		}
	}
	for k := range mesh {
		w, err := NewSwarmWorker(cfg, layout, plan.StageOf(k), k, ctrl[k], mesh[k])
		if err != nil {
			p.Close()
			return nil, err
		}
		p.run(p.holders[k], w, ctrl[k])
	}
	return p, nil
}

func (p *inSwarm) pipe() (transport.Conn, transport.Conn) {
	a, b := transport.Pipe(transport.PipeOptions{})
	p.closers = append(p.closers, a.Close, b.Close)
	return a, b
}

// linked reports whether nodes of stages i and j may exchange anything.
func (p *inSwarm) linked(i, j int) bool { return SwarmLinked(p.layout, i, j) }

// SwarmLinked reports whether replicas of stages i and j of a swarm may
// exchange anything in some route: they are the same stage (the summing
// chain), neighbours (activations and gradients), or the two ends of the
// tied embedding.
func SwarmLinked(layout scheduler.Layout, i, j int) bool {
	S := layout.Stages()
	d := i - j
	return d == 1 || d == -1 || d == 0 || (S > 1 && (i == 0 && j == S-1 || i == S-1 && j == 0))
}

// link is a pipe between replica ra of stage i and replica rb of stage j,
// each end shaped as on a real link between them.
func (p *inSwarm) link(i, j, ra, rb int) (transport.Conn, transport.Conn, error) {
	shapeA := func(c transport.Conn) (transport.Conn, error) { return ShapeLink(p.cfg, p.layout, i, j, c) }
	shapeB := func(c transport.Conn) (transport.Conn, error) { return ShapeLink(p.cfg, p.layout, j, i, c) }
	if i == j {
		shapeA = func(c transport.Conn) (transport.Conn, error) { return ShapeReplicaLink(p.cfg, i, ra, rb, c) }
		shapeB = func(c transport.Conn) (transport.Conn, error) { return ShapeReplicaLink(p.cfg, i, rb, ra, c) }
	}
	a, b := p.pipe()
	sa, err := shapeA(a)
	if err != nil {
		return nil, nil, err
	}
	sb, err := shapeB(b)
	if err != nil {
		return nil, nil, err
	}
	// Shapers close first: they flush into the pipes they wrap.
	p.closers = append([]func() error{sa.Close, sb.Close}, p.closers...)
	return sa, sb, nil
}

// run starts holder's worker, which ends with Kill or Close.
func (p *inSwarm) run(holder string, w *Worker, ctrl transport.Conn) {
	ctx, stop := context.WithCancel(p.ctx)
	p.mu.Lock()
	p.workers[holder], p.stop[holder], p.ends[holder] = w, stop, ctrl
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		w.Run(ctx) // its errors reach the driver over the control link
		// A worker that returned (dropped, killed) is gone: the driver
		// hears it as its control link closing.
		ctrl.Close()
	}()
}

func (p *inSwarm) Spares() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.spares...)
}

// Kill stops holder's worker at once: its goroutine returns, its links
// and its control link close, as a killed process's would.
func (p *inSwarm) Kill(holder string) error {
	p.mu.Lock()
	stop, ok := p.stop[holder]
	end := p.ends[holder]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("kill %s: %w", holder, ErrCannotKill)
	}
	stop()
	end.Close()
	return nil
}

func (p *inSwarm) StartPeer(context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started++
	name := fmt.Sprintf("joiner-%d", p.started)
	p.spares = append(p.spares, name)
	return name, nil
}

func (p *inSwarm) Claim(_ context.Context, spare string) (transport.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := -1
	for k, s := range p.spares {
		if s == spare {
			i = k
		}
	}
	if i < 0 {
		return nil, fmt.Errorf("claim %s: no such spare here", spare)
	}
	p.spares = append(p.spares[:i], p.spares[i+1:]...)
	a, b := p.pipe()
	p.claimed[a], p.ctrlEnd[spare] = spare, b
	return a, nil
}

func (p *inSwarm) Setup(context.Context, transport.Conn, int, []string) error {
	return errors.New("in-process stages cannot change hands: a peer that joins a swarm becomes a replica (SetupReplica)")
}

func (p *inSwarm) DialsPeers() bool { return false }

func (p *inSwarm) SetupReplica(_ context.Context, c transport.Conn, stage, node int, peers map[int]SwarmPeer) error {
	p.mu.Lock()
	holder, ok := p.claimed[c]
	end := p.ctrlEnd[holder]
	delete(p.claimed, c)
	delete(p.ctrlEnd, holder)
	p.mu.Unlock()
	if !ok {
		return errors.New("set up a replica: that control link was not claimed here")
	}
	mesh := map[int]transport.Conn{}
	for k, sp := range peers {
		p.mu.Lock()
		w, i := p.workers[sp.Name], p.stageOf[sp.Name]
		p.mu.Unlock()
		if w == nil {
			continue // gone meanwhile: nothing to link
		}
		mine, theirs, err := p.link(stage, i, node, k)
		if err != nil {
			return err
		}
		mesh[k] = mine
		w.AddLink(node, theirs)
	}
	w, err := NewSwarmWorker(p.cfg, p.layout, stage, node, end, mesh)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.nodes[node], p.stageOf[holder] = holder, stage
	p.mu.Unlock()
	p.run(holder, w, end)
	return nil
}
