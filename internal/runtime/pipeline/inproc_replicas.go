package pipeline

import (
	"context"
	"fmt"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
)

// inProcessReplicas is InProcess for stages held by several replicas
// (docs/swarm.md): R lanes of S workers, each lane linked as a pipeline
// without replicas is (its own tied link too), and the replicas of each
// stage linked in a chain for their gradient sum. Workers are numbered as
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
	// link joins stages i and j of one lane, each end shaped as on a real
	// link between them.
	link := func(i, j int) (transport.Conn, transport.Conn, error) {
		a, b := pipe()
		return shaped(a, b,
			func(c transport.Conn) (transport.Conn, error) { return ShapeLink(cfg, layout, i, j, c) },
			func(c transport.Conn) (transport.Conn, error) { return ShapeLink(cfg, layout, j, i, c) })
	}
	links := make([]Links, S*R)
	for k := range links {
		a, b := pipe()
		p.ctrl = append(p.ctrl, a)
		links[k].Ctrl = b
		i, r := plan.StageOf(k), plan.ReplicaOf(k)
		name := fmt.Sprintf("stage-%d", i)
		if r > 0 {
			name = fmt.Sprintf("stage-%d-replica-%d", i, r)
		}
		p.holders = append(p.holders, name)
	}
	for r := 0; r < R; r++ {
		at := func(i int) *Links { return &links[plan.Worker(i, r)] }
		for i := 0; i+1 < S; i++ {
			if at(i).Next, at(i + 1).Prev, err = link(i, i+1); err != nil {
				p.Close()
				return nil, err
			}
		}
		if S > 1 {
			if !layout.TiedOwnLink() {
				at(0).Tied, at(S-1).Tied = at(0).Next, at(S-1).Prev
			} else if at(0).Tied, at(S - 1).Tied, err = link(0, S-1); err != nil {
				p.Close()
				return nil, err
			}
		}
	}
	// The chain of each stage's replicas: replica r's upper end meets
	// replica r+1's lower end.
	lower := make([]transport.Conn, S*R)
	upper := make([]transport.Conn, S*R)
	for i := 0; i < S; i++ {
		for r := 0; r+1 < R; r++ {
			a, b := pipe()
			shape := func(from, to int) func(transport.Conn) (transport.Conn, error) {
				return func(c transport.Conn) (transport.Conn, error) { return ShapeReplicaLink(cfg, i, from, to, c) }
			}
			up, down, err := shaped(a, b, shape(r, r+1), shape(r+1, r))
			if err != nil {
				p.Close()
				return nil, err
			}
			upper[plan.Worker(i, r)], lower[plan.Worker(i, r+1)] = up, down
		}
	}
	wctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for k := range links {
		i, r := plan.StageOf(k), plan.ReplicaOf(k)
		w, err := NewReplica(cfg, layout, i, r, links[k], lower[k], upper[k])
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
