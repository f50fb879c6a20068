package launch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/identity"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/signaling/rtc"
)

// The peer's side of a WebRTC run, shared by `narrowband peer` (RunPeer,
// webrtc.go) and the browser tab's wasm peer (cmd/nbwasm): everything after
// joining the room, which is the same for both.

// CoordinatorID is the coordinator's name in the room.
const CoordinatorID = "coordinator"

type rtcSetup struct {
	Config string            `json:"config"`
	Ranges []scheduler.Range `json:"ranges"`
	// Peers names every worker's peer, numbered as scheduler.Replicas
	// numbers workers (stage → peer without replicas).
	Peers   []string `json:"peers"`
	Stage   int      `json:"stage"`
	Replica int      `json:"replica,omitempty"` // of the stage (pipeline.replicas; docs/swarm.md)
	Err     string   `json:"err,omitempty"`     // the run refuses this peer
	// A peer that joins a running swarm: its node, and the nodes it links
	// to (node → peer) with their stages.
	Node  int            `json:"node,omitempty"`
	Mesh  map[int]string `json:"mesh,omitempty"`
	Ofs   map[int]int    `json:"stages,omitempty"`
	Joins bool           `json:"joins,omitempty"`
}

// joinChallenge is the coordinator's first message on a control channel;
// joinProof the peer's answer: its key, and its signature of the room, its
// name and the challenge.
type joinChallenge struct {
	Challenge []byte `json:"challenge"`
}

type joinProof struct {
	Key   identity.Public `json:"key"`
	Proof []byte          `json:"proof"`
}

// ServePeer is a peer after it joined the room (through sig, as a process
// with the secret or as a browser tab with a join token): it waits for the
// coordinator to give it a stage (a spare waits until it is needed), proves
// idKey, links to its neighbours and serves commands until the run ends.
// meter, if set, counts its steps and bytes (for a caller that shows its
// progress).
func ServePeer(ctx context.Context, client rtc.Signaler, room string, idKey *identity.Key, rc rtc.Config, meter *Meter, log *slog.Logger) error {
	id := client.ID()
	// The coordinator connects when it gives this peer a stage; a spare
	// keeps waiting, until the run ends and the room closes.
	var ctrl *rtc.Conn
	for ctrl == nil {
		c, err := rtc.Connect(ctx, client, CoordinatorID, rc)
		if err == nil {
			ctrl = c
			break
		}
		select {
		case <-client.Done():
			return nil // the run is over
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
	}
	defer ctrl.Close()
	// The coordinator asks who we are: our key, signed for this room,
	// name and its challenge.
	var jc joinChallenge
	if err := recvJSON(ctx, ctrl, &jc); err != nil {
		return fmt.Errorf("peer %s: join challenge: %w", id, err)
	}
	if err := sendJSON(ctx, ctrl, joinProof{Key: idKey.Public(), Proof: idKey.Prove(room, id, jc.Challenge)}); err != nil {
		return fmt.Errorf("peer %s: join proof: %w", id, err)
	}
	var su rtcSetup
	if err := recvJSON(ctx, ctrl, &su); err != nil {
		return fmt.Errorf("peer %s: setup: %w", id, err)
	}
	if su.Err != "" {
		return fmt.Errorf("peer %s (key %s): the run refused it: %s", id, idKey.Public().Short(), su.Err)
	}
	var link transport.Conn = ctrl
	if meter != nil {
		link = meteredCtrl{ctrl, meter}
	}
	w, links, closers, err := setupRTCWorker(ctx, client, rc, su, link)
	if err == nil && meter != nil {
		if cfg, cerr := config.Parse(su.Config, "setup"); cerr == nil {
			meter.started(su.Stage, cfg.Train.BatchSize*cfg.Model.BlockSize, links.Prev, links.Next, links.Tied)
		}
	}
	return serveWorker(ctx, link, w, closers, err, log.With("peer", id, "stage", su.Stage))
}

func setupRTCWorker(ctx context.Context, client rtc.Signaler, rc rtc.Config, su rtcSetup, ctrl transport.Conn) (*pipeline.Worker, pipeline.Links, []func() error, error) {
	cfg, err := workerConfig(su.Config)
	if err != nil {
		return nil, pipeline.Links{}, nil, err
	}
	layout, err := scheduler.NewLayout(su.Ranges)
	if err != nil {
		return nil, pipeline.Links{}, nil, fmt.Errorf("setup: %w", err)
	}
	S, i := layout.Stages(), su.Stage
	R, r := cfg.Pipeline.ReplicaCount(), su.Replica
	if R > 1 {
		return setupSwarmWorker(ctx, client, rc, cfg, layout, su, ctrl)
	}
	if len(su.Peers) != S*R || i < 0 || i >= S || r < 0 || r >= R {
		return nil, pipeline.Links{}, nil, fmt.Errorf("setup for %d stages × %d replicas with %d peers, stage %d replica %d", S, R, len(su.Peers), i, r)
	}
	// want is a link to stage peer's worker in this peer's lane, or (with
	// replica ≥ 0) to that replica of this stage, the chain of the
	// gradient sum.
	type want struct {
		peer, replica int
		dst           *transport.Conn
	}
	links := pipeline.Links{Ctrl: ctrl}
	var lower, upper transport.Conn
	var wants []want
	if i > 0 {
		wants = append(wants, want{i - 1, -1, &links.Prev})
	}
	if i+1 < S {
		wants = append(wants, want{i + 1, -1, &links.Next})
	}
	if t := layout.Tied(i); t >= 0 && layout.TiedOwnLink() {
		wants = append(wants, want{t, -1, &links.Tied})
	}
	if r > 0 {
		wants = append(wants, want{i, r - 1, &lower})
	}
	if r+1 < R {
		wants = append(wants, want{i, r + 1, &upper})
	}
	peerOf := func(wnt want) string {
		if wnt.replica >= 0 {
			return su.Peers[wnt.replica*S+i]
		}
		return su.Peers[r*S+wnt.peer]
	}
	var closers []func() error
	var mu sync.Mutex
	errs := make([]error, len(wants))
	var wg sync.WaitGroup
	for k, wnt := range wants {
		if peerOf(wnt) == "" {
			// The neighbour's stage is vacant: it links to this peer
			// when its own hand-over comes.
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := rtc.Connect(ctx, client, peerOf(wnt), rc)
			if err != nil {
				errs[k] = fmt.Errorf("link to stage %d (%s): %w", wnt.peer, peerOf(wnt), err)
				return
			}
			mu.Lock()
			closers = append(closers, c.Close)
			mu.Unlock()
			var sc transport.Conn
			if wnt.replica >= 0 {
				sc, err = pipeline.ShapeReplicaLink(cfg, i, r, wnt.replica, c)
			} else {
				sc, err = pipeline.ShapeLink(cfg, layout, i, wnt.peer, c)
			}
			if err != nil {
				errs[k] = err
				return
			}
			*wnt.dst = sc
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return nil, links, closers, e
		}
	}
	if S == 2 {
		if i == 0 {
			links.Tied = links.Next
		} else {
			links.Tied = links.Prev
		}
	}
	w, err := pipeline.NewReplica(cfg, layout, i, r, links, lower, upper)
	if err == nil {
		w.SetOwnProcess()
		limitMemory(cfg, layout, i)
	}
	if err != nil {
		return nil, links, closers, err
	}
	// A failed link, or a neighbour that moved to another peer, is
	// re-established through signaling: a new ICE session.
	w.SetRelink(func(ctx context.Context, peer int, peers []string) (transport.Conn, error) {
		if peer < 0 || peer >= S || len(peers) != S*R {
			return nil, fmt.Errorf("relink to stage %d of %d peers", peer, len(peers))
		}
		c, err := rtc.Connect(ctx, client, peers[r*S+peer], rc)
		if err != nil {
			return nil, err
		}
		return pipeline.ShapeLink(cfg, layout, i, peer, c)
	})
	return w, links, closers, err
}

// setupSwarmWorker is setupRTCWorker for a swarm's replica (docs/swarm.md):
// it links to every node it may exchange anything with whatever the route
// (the replicas of the stages beside its own, of its own, and of the other
// end of the tied embedding), each side dialling the other, and later to
// nodes that join, when the coordinator says (Worker.SetDial).
func setupSwarmWorker(ctx context.Context, client rtc.Signaler, rc rtc.Config, cfg config.Config, layout scheduler.Layout, su rtcSetup, ctrl transport.Conn) (*pipeline.Worker, pipeline.Links, []func() error, error) {
	S, i := layout.Stages(), su.Stage
	R := cfg.Pipeline.ReplicaCount()
	if i < 0 || i >= S {
		return nil, pipeline.Links{}, nil, fmt.Errorf("setup for stage %d of %d", i, S)
	}
	node := su.Node
	mesh, stageOf := su.Mesh, su.Ofs
	if !su.Joins {
		// The initial swarm: nodes numbered r·S + stage, every one named.
		if len(su.Peers) != S*R || su.Replica < 0 || su.Replica >= R {
			return nil, pipeline.Links{}, nil, fmt.Errorf("setup for %d stages × %d replicas with %d peers, replica %d", S, R, len(su.Peers), su.Replica)
		}
		node = su.Replica*S + i
		mesh, stageOf = map[int]string{}, map[int]int{}
		for k, id := range su.Peers {
			if k != node && id != "" && pipeline.SwarmLinked(layout, i, k%S) {
				mesh[k], stageOf[k] = id, k%S
			}
		}
	}
	shape := func(j, other int, c transport.Conn) (transport.Conn, error) {
		if j == i {
			return pipeline.ShapeReplicaLink(cfg, i, node, other, c)
		}
		return pipeline.ShapeLink(cfg, layout, i, j, c)
	}
	conns := map[int]transport.Conn{}
	var closers []func() error
	var mu sync.Mutex
	var wg sync.WaitGroup
	var first error
	for k, id := range mesh {
		j, ok := stageOf[k]
		if !ok || j < 0 || j >= S {
			return nil, pipeline.Links{}, nil, fmt.Errorf("setup: node %d (%s) of no stage", k, id)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := rtc.Connect(ctx, client, id, rc)
			var sc transport.Conn
			if err == nil {
				sc, err = shape(j, k, c)
			}
			mu.Lock()
			defer mu.Unlock()
			if c != nil {
				closers = append(closers, c.Close)
			}
			if err != nil {
				if first == nil {
					first = fmt.Errorf("link to node %d (%s, stage %d): %w", k, id, j, err)
				}
				return
			}
			conns[k] = sc
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, pipeline.Links{}, closers, first
	}
	w, err := pipeline.NewSwarmWorker(cfg, layout, i, node, ctrl, conns)
	if err != nil {
		return nil, pipeline.Links{}, closers, err
	}
	w.SetOwnProcess()
	limitMemory(cfg, layout, i)
	w.SetDial(func(ctx context.Context, k, stage int, id string) (transport.Conn, error) {
		if stage < 0 || stage >= S {
			return nil, fmt.Errorf("link to node %d of stage %d", k, stage)
		}
		c, err := rtc.Connect(ctx, client, id, rc)
		if err != nil {
			return nil, err
		}
		return shape(stage, k, c)
	})
	return w, pipeline.Links{Ctrl: ctrl, Mesh: conns}, closers, nil
}
