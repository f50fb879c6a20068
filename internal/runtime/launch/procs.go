//go:build !js

package launch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/identity"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
)

// With pipeline.processes = true every stage runs in its own OS process
// (`narrowband worker`), started by the driver, and the stages talk over
// loopback TCP — real sockets, real process boundaries, the same worker
// code. Setup:
//
//	driver listens for control connections and starts S workers
//	worker → driver   hello{stage, token, link address it listens on}
//	driver → worker   setup{config, ranges, every worker's link address}
//	worker i dials i+1 (and stage 0 dials S-1 for the tied embedding when
//	S > 2), announcing itself with a one-message hello on the new link
//	worker → driver   ready
//
// then the driver drives the workers exactly as in-process.

// WorkerEnv marks a process started as a stage worker; the command's
// arguments follow it in NARROWBAND_WORKER_ARGS (JSON).
const WorkerEnv = "NARROWBAND_WORKER"

type workerArgs struct {
	Connect string `json:"connect"`
	Stage   int    `json:"stage"`
	Replica int    `json:"replica,omitempty"` // of the stage (pipeline.replicas; docs/swarm.md)
	Token   string `json:"token"`
}

type hello struct {
	Stage   int    `json:"stage"`
	Replica int    `json:"replica,omitempty"`
	Token   string `json:"token"`
	Addr    string `json:"addr"`
}

type setup struct {
	Config string            `json:"config"`
	Ranges []scheduler.Range `json:"ranges"`
	// Addrs is every worker's link address, numbered as
	// scheduler.Replicas numbers workers (stage order without replicas).
	Addrs []string `json:"addrs"`
}

type linkHello struct {
	From    int    `json:"from"`
	Replica int    `json:"replica,omitempty"` // the dialler's replica of stage From
	Kind    string `json:"kind"`              // "next", "tied", or "replica" (the chain of From's replicas)
	Token   string `json:"token"`
}

// WorkerCommand is how the driver starts a worker process: the program
// and leading arguments. The default is this executable with "worker";
// tests point it at their own binary.
var WorkerCommand = func() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{exe, "worker"}, nil
}

// procs is the placement of pipeline.processes = true: one worker process
// per stage, control and stage links over loopback TCP. Its stages cannot
// change hands (a dead process ends the run).
type procs struct {
	ctrl    []transport.Conn
	holders []string
	spawner
}

// Processes launches one worker process per stage of layout (per replica
// of each stage with pipeline.replicas > 1) and returns once every worker
// is set up and linked to its neighbours.
func Processes(ctx context.Context, cfg config.Config, layout scheduler.Layout) (pipeline.Placement, error) {
	p := &procs{}
	if err := p.start(ctx, cfg, layout); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *procs) start(ctx context.Context, cfg config.Config, layout scheduler.Layout) error {
	S, R := layout.Stages(), cfg.Pipeline.ReplicaCount()
	n := S * R // workers, replica-major (scheduler.Replicas.Worker)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("processes: control listener: %w", err)
	}
	defer ln.Close()
	var tok [16]byte
	rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	for k := 0; k < n; k++ {
		i, r := k%S, k/S
		if _, err := p.spawn("NARROWBAND_WORKER_ARGS", workerArgs{Connect: ln.Addr().String(), Stage: i, Replica: r, Token: token}); err != nil {
			return fmt.Errorf("processes: start stage %d: %w", i, err)
		}
		name := fmt.Sprintf("stage-%d", i)
		if r > 0 {
			name = fmt.Sprintf("stage-%d-replica-%d", i, r)
		}
		p.holders = append(p.holders, name)
	}
	setupCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	go func() { <-setupCtx.Done(); ln.Close() }()
	p.ctrl = make([]transport.Conn, n)
	addrs := make([]string, n)
	for got := 0; got < n; got++ {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("processes: waiting for %d workers to connect: %w", n-got, err)
		}
		conn := transport.Stream(c, "host")
		var h hello
		err = recvJSON(setupCtx, conn, &h)
		k := h.Replica*S + h.Stage
		if err != nil || h.Token != token || h.Stage < 0 || h.Stage >= S || h.Replica < 0 || h.Replica >= R || p.ctrl[k] != nil {
			conn.Close()
			return fmt.Errorf("processes: a connection that is not one of this run's workers (err %v)", err)
		}
		p.ctrl[k], addrs[k] = conn, h.Addr
	}
	text, err := cfg.TOML()
	if err != nil {
		return err
	}
	for i, c := range p.ctrl {
		if err := sendJSON(setupCtx, c, setup{Config: string(text), Ranges: layout.Ranges(), Addrs: addrs}); err != nil {
			return fmt.Errorf("processes: setup of stage %d: %w", i, err)
		}
	}
	for i, c := range p.ctrl {
		var ok struct {
			Err string `json:"err"`
		}
		if err := recvJSON(setupCtx, c, &ok); err != nil {
			return fmt.Errorf("processes: stage %d did not get ready: %w", i, err)
		}
		if ok.Err != "" {
			return fmt.Errorf("processes: stage %d: %s", i, ok.Err)
		}
	}
	return nil
}

func (p *procs) Control() []transport.Conn  { return p.ctrl }
func (p *procs) Holders() []string          { return p.holders }
func (p *procs) Address() string            { return "127.0.0.1 (own process)" }
func (p *procs) Spares() []string           { return nil }
func (p *procs) CanHandOver() bool          { return false }
func (p *procs) JoinCommand() string        { return "" }
func (p *procs) Kill(string) error          { return pipeline.ErrCannotKill }
func (p *procs) Key(string) identity.Public { return "" }

func (p *procs) Claim(context.Context, string) (transport.Conn, error) {
	return nil, errors.New("processes: stages cannot change hands (use pipeline.transport = \"webrtc\" with spares)")
}

func (p *procs) Setup(context.Context, transport.Conn, int, []string) error {
	return errors.New("processes: stages cannot change hands")
}

// Close closes the control links, which ends the workers, and waits for
// them.
func (p *procs) Close() error {
	for _, c := range p.ctrl {
		if c != nil {
			c.Close()
		}
	}
	p.stop()
	return nil
}

// spawner starts worker processes and stops them.
type spawner struct {
	procs []*exec.Cmd
}

// spawn starts one worker process (WorkerCommand) whose arguments are args
// as JSON in the environment variable env.
func (p *spawner) spawn(env string, args any) (*exec.Cmd, error) {
	argv, err := WorkerCommand()
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), WorkerEnv+"=1", env+"="+string(js))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.procs = append(p.procs, cmd)
	return cmd, nil
}

// stop waits briefly for the workers to exit after their control links
// closed, then kills what is left.
func (p *spawner) stop() {
	for _, cmd := range p.procs {
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	p.procs = nil
}

// RunWorker is the body of a worker process: it connects to the driver,
// sets up its links and serves commands until the driver closes the
// control link.
func RunWorker(ctx context.Context, log *slog.Logger) error {
	if js := os.Getenv("NARROWBAND_PEER_ARGS"); js != "" {
		var pa PeerArgs
		if err := json.Unmarshal([]byte(js), &pa); err != nil {
			return fmt.Errorf("peer: NARROWBAND_PEER_ARGS: %w", err)
		}
		return RunPeer(ctx, pa, log)
	}
	var a workerArgs
	if err := json.Unmarshal([]byte(os.Getenv("NARROWBAND_WORKER_ARGS")), &a); err != nil {
		return fmt.Errorf("worker: NARROWBAND_WORKER_ARGS: %w (workers are started by `narrowband run` with pipeline.processes = true)", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("worker %d: link listener: %w", a.Stage, err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", a.Connect)
	if err != nil {
		return fmt.Errorf("worker %d: connect to driver %s: %w", a.Stage, a.Connect, err)
	}
	ctrl := transport.Stream(c, "host")
	defer ctrl.Close()
	if err := sendJSON(ctx, ctrl, hello{Stage: a.Stage, Replica: a.Replica, Token: a.Token, Addr: ln.Addr().String()}); err != nil {
		return err
	}
	var su setup
	if err := recvJSON(ctx, ctrl, &su); err != nil {
		return fmt.Errorf("worker %d: setup: %w", a.Stage, err)
	}
	w, closers, err := setupWorker(ctx, a, su, ln, ctrl)
	return serveWorker(ctx, ctrl, w, closers, err, log.With("stage", a.Stage))
}

func setupWorker(ctx context.Context, a workerArgs, su setup, ln net.Listener, ctrl transport.Conn) (*pipeline.Worker, []func() error, error) {
	cfg, err := workerConfig(su.Config)
	if err != nil {
		return nil, nil, err
	}
	layout, err := scheduler.NewLayout(su.Ranges)
	if err != nil {
		return nil, nil, fmt.Errorf("worker %d: setup: %w", a.Stage, err)
	}
	S, i := layout.Stages(), a.Stage
	R, r := cfg.Pipeline.ReplicaCount(), a.Replica
	if len(su.Addrs) != S*R || i < 0 || i >= S || r < 0 || r >= R {
		return nil, nil, fmt.Errorf("worker %d: setup for %d stages × %d replicas with %d addresses (this is replica %d)", i, S, R, len(su.Addrs), r)
	}
	// at is the address of stage j's worker in this worker's lane, or of
	// replica q of this stage (scheduler.Replicas numbering).
	at := func(j, q int) string { return su.Addrs[q*S+j] }
	links := pipeline.Links{Ctrl: ctrl}
	var closers []func() error
	shape := func(c transport.Conn, peer int) (transport.Conn, error) {
		return pipeline.ShapeLink(cfg, layout, i, peer, c)
	}
	dial := func(addr string, kind string) (transport.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("worker %d: dial a %s link at %s: %w", i, kind, addr, err)
		}
		conn := transport.Stream(c, "host")
		closers = append(closers, conn.Close)
		if err := sendJSON(ctx, conn, linkHello{From: i, Replica: r, Kind: kind, Token: a.Token}); err != nil {
			return nil, err
		}
		return conn, nil
	}
	// Dial forward links; accept the ones that come to us.
	want := 0
	if i > 0 {
		want++ // from i-1
	}
	if i == S-1 && S > 2 {
		want++ // tied, from stage 0
	}
	if r > 0 {
		want++ // the chain, from replica r-1
	}
	var lower, upper transport.Conn // the chain of this stage's replicas
	if r+1 < R {
		c, err := dial(at(i, r+1), "replica")
		if err != nil {
			return nil, closers, err
		}
		if upper, err = pipeline.ShapeReplicaLink(cfg, i, r, r+1, c); err != nil {
			return nil, closers, err
		}
	}
	if i+1 < S {
		c, err := dial(at(i+1, r), "next")
		if err != nil {
			return nil, closers, err
		}
		if links.Next, err = shape(c, i+1); err != nil {
			return nil, closers, err
		}
	}
	if i == 0 && S > 2 {
		c, err := dial(at(S-1, r), "tied")
		if err != nil {
			return nil, closers, err
		}
		if links.Tied, err = shape(c, S-1); err != nil {
			return nil, closers, err
		}
	}
	for n := 0; n < want; n++ {
		if tl, ok := ln.(*net.TCPListener); ok {
			tl.SetDeadline(time.Now().Add(30 * time.Second))
		}
		c, err := ln.Accept()
		if err != nil {
			return nil, closers, fmt.Errorf("worker %d: waiting for a neighbour to connect: %w", i, err)
		}
		conn := transport.Stream(c, "host")
		closers = append(closers, conn.Close)
		var lh linkHello
		if err := recvJSON(ctx, conn, &lh); err != nil || lh.Token != a.Token {
			return nil, closers, fmt.Errorf("worker %d: a link connection that is not from this run (err %v)", i, err)
		}
		switch {
		case lh.Kind == "replica" && lh.From == i && lh.Replica == r-1:
			if lower, err = pipeline.ShapeReplicaLink(cfg, i, r, r-1, conn); err != nil {
				return nil, closers, err
			}
		case lh.Replica != r:
			return nil, closers, fmt.Errorf("worker %d replica %d: a %s link from replica %d of stage %d, which is not in this lane", i, r, lh.Kind, lh.Replica, lh.From)
		case lh.Kind == "next" && lh.From == i-1:
			if links.Prev, err = shape(conn, i-1); err != nil {
				return nil, closers, err
			}
		case lh.Kind == "tied" && lh.From == 0 && i == S-1:
			if links.Tied, err = shape(conn, 0); err != nil {
				return nil, closers, err
			}
		default:
			return nil, closers, fmt.Errorf("worker %d: unexpected link %+v", i, lh)
		}
	}
	if S == 2 {
		if i == 0 {
			links.Tied = links.Next
		} else {
			links.Tied = links.Prev
		}
	}
	for _, c := range []transport.Conn{links.Next, links.Prev, links.Tied, lower, upper} {
		if c != nil {
			closers = append([]func() error{c.Close}, closers...)
		}
	}
	w, err := pipeline.NewReplica(cfg, layout, i, r, links, lower, upper)
	if err == nil {
		w.SetOwnProcess()
		limitMemory(cfg, layout, i)
	}
	return w, closers, err
}
