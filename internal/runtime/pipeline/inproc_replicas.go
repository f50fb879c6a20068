package pipeline

import (
	"context"
	"fmt"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
)

// inProcessReplicas is InProcess for stages held by several replicas
// (docs/swarm.md): S·R swarm workers (NewSwarmWorker), each linked to
// every worker it may exchange anything with whatever the route. Workers are numbered as
// scheduler.Replicas says: the first replicas, in stage order, are
// "stage-0" … "stage-{S-1}", as without replicas.
func inProcessReplicas(cfg config.Config, layout scheduler.Layout) (Placement, error) {
	plan, err := replicaPlan(cfg, layout)
	if err != nil {
		return nil, err
	}
	S, R := plan.Stages(), plan.Count()
	p := &inProcess{}
	pipe := func() (transport.Conn, transport.Conn) {
		a, b := transport.Pipe(transport.PipeOptions{})
		p.closers = append(p.closers, a.Close, b.Close)
		return a, b
	}
	shaped := func(a, b transport.Conn, shapeA, shapeB func(transport.Conn) (transport.Conn, error)) (transport.Conn, transport.Conn, error) {
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
	// Every node gets a link to every node it may exchange anything with
	// in some route: the replicas of the stages beside its own, of its own
	// stage (the summing chain), and of the other end of the tied
	// embedding. Routes and chains change as replicas come and go; the
	// links are all there.
	ctrl := make([]transport.Conn, S*R)
	mesh := make([]map[int]transport.Conn, S*R)
	for k := range mesh {
		a, b := pipe()
		p.ctrl = append(p.ctrl, a)
		ctrl[k] = b
		mesh[k] = map[int]transport.Conn{}
		i, r := plan.StageOf(k), plan.ReplicaOf(k)
		name := fmt.Sprintf("stage-%d", i)
		if r > 0 {
			name = fmt.Sprintf("stage-%d-replica-%d", i, r)
		}
		p.holders = append(p.holders, name)
	}
	linked := func(i, j int) bool {
		d := i - j
		return d == 1 || d == -1 || d == 0 || (S > 1 && (i == 0 && j == S-1 || i == S-1 && j == 0))
	}
	for a := range mesh {
		for b := a + 1; b < len(mesh); b++ {
			i, j := plan.StageOf(a), plan.StageOf(b)
			if !linked(i, j) {
				continue
			}
			ra, rb := plan.ReplicaOf(a), plan.ReplicaOf(b)
			shapeA := func(c transport.Conn) (transport.Conn, error) { return ShapeLink(cfg, layout, i, j, c) }
			shapeB := func(c transport.Conn) (transport.Conn, error) { return ShapeLink(cfg, layout, j, i, c) }
			if i == j {
				shapeA = func(c transport.Conn) (transport.Conn, error) { return ShapeReplicaLink(cfg, i, ra, rb, c) }
				shapeB = func(c transport.Conn) (transport.Conn, error) { return ShapeReplicaLink(cfg, i, rb, ra, c) }
			}
			x, y := pipe()
			if mesh[a][b], mesh[b][a], err = shaped(x, y, shapeA, shapeB); err != nil {
				p.Close()
				return nil, err
			}
		}
	}
	wctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for k := range mesh {
		w, err := NewSwarmWorker(cfg, layout, plan.StageOf(k), k, ctrl[k], mesh[k])
		if err != nil {
			p.Close()
			return nil, err
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			w.Run(wctx) // its errors reach the driver over the control link
		}()
	}
	return p, nil
}
