package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/identity"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
)

// inProcess places every stage in a goroutine of this process, linked by
// in-memory pipes shaped by the config's network profile: the placement of
// tests and one-machine runs. Its stages cannot change hands.
type inProcess struct {
	ctrl    []transport.Conn
	holders []string
	closers []func() error
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// InProcess builds a worker per stage of layout in goroutines and links
// them with pipes.
func InProcess(cfg config.Config, layout scheduler.Layout) (Placement, error) {
	if cfg.Pipeline.ReplicaCount() > 1 {
		return inProcessReplicas(cfg, layout)
	}
	S := layout.Stages()
	p := &inProcess{}
	links := make([]Links, S)
	pipe := func() (transport.Conn, transport.Conn) {
		a, b := transport.Pipe(transport.PipeOptions{})
		p.closers = append(p.closers, a.Close, b.Close)
		return a, b
	}
	// link joins stages i and j with a pipe, each end shaped as i's and
	// j's sends would be on a real link.
	link := func(i, j int) (transport.Conn, transport.Conn, error) {
		a, b := pipe()
		sa, err := ShapeLink(cfg, layout, i, j, a)
		if err != nil {
			return nil, nil, err
		}
		sb, err := ShapeLink(cfg, layout, j, i, b)
		if err != nil {
			return nil, nil, err
		}
		// Shapers close first: they flush into the pipes they wrap.
		p.closers = append([]func() error{sa.Close, sb.Close}, p.closers...)
		return sa, sb, nil
	}
	for i := 0; i < S; i++ {
		a, b := pipe()
		p.ctrl = append(p.ctrl, a)
		links[i].Ctrl = b
		p.holders = append(p.holders, fmt.Sprintf("stage-%d", i))
	}
	var err error
	for i := 0; i+1 < S; i++ {
		if links[i].Next, links[i+1].Prev, err = link(i, i+1); err != nil {
			p.Close()
			return nil, err
		}
	}
	if S > 1 {
		if !layout.TiedOwnLink() {
			// The ends are neighbours: the tied gradient shares their
			// link, as it would share the one connection between two
			// peers.
			links[0].Tied, links[S-1].Tied = links[0].Next, links[S-1].Prev
		} else if links[0].Tied, links[S-1].Tied, err = link(0, S-1); err != nil {
			// In a real deployment the tied link is one more home
			// link, shaped like the others.
			p.Close()
			return nil, err
		}
	}
	wctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for i := 0; i < S; i++ {
		w, err := NewWorker(cfg, layout, i, links[i])
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

func (p *inProcess) Control() []transport.Conn  { return p.ctrl }
func (p *inProcess) Holders() []string          { return p.holders }
func (p *inProcess) Address() string            { return "in-process" }
func (p *inProcess) Spares() []string           { return nil }
func (p *inProcess) CanHandOver() bool          { return false }
func (p *inProcess) JoinCommand() string        { return "" }
func (p *inProcess) Kill(string) error          { return ErrCannotKill }
func (p *inProcess) Key(string) identity.Public { return "" }

func (p *inProcess) Claim(context.Context, string) (transport.Conn, error) {
	return nil, errors.New("in-process stages cannot change hands")
}

func (p *inProcess) Setup(context.Context, transport.Conn, int, []string) error {
	return errors.New("in-process stages cannot change hands")
}

func (p *inProcess) Close() error {
	if p.cancel != nil {
		p.cancel()
	}
	for _, c := range p.closers {
		c()
	}
	p.wg.Wait()
	return nil
}

// ShapeLink shapes what stage from sends to stage to over c with the
// config's profile for that link (unchanged if the profile shapes nothing).
// Each direction of each link has its own seed, so jitter and loss are the
// same wherever the stages run.
func ShapeLink(cfg config.Config, layout scheduler.Layout, from, to int, c transport.Conn) (transport.Conn, error) {
	prof := cfg.LinkProfile(min(from, to), max(from, to))
	if !prof.Shaped() {
		return c, nil
	}
	return transport.Shape(c, prof, transport.ShapeOptions{Seed: uint64(cfg.Run.Seed) ^ linkSeed(layout, from, to), CloseGrace: -1})
}

// linkSeed numbers the directions of a layout's links: 2i+1 for i → i+1,
// 2i for i → i-1, and two constants for the tied link's directions.
func linkSeed(l scheduler.Layout, from, to int) uint64 {
	switch {
	case to == from+1:
		return uint64(2*from + 1)
	case to == from-1:
		return uint64(2 * from)
	case from == 0:
		return 0x71ed1
	}
	return 0x71ed2
}
