//go:build !js

package launch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/identity"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/signaling"
	"github.com/narrowband/narrowband/signaling/rtc"
)

// With pipeline.transport = "webrtc" the run is a room on a signaling
// server: the driver joins it as "coordinator" (in-process), peers join as
// separate processes — started here (local_peers) or with `narrowband peer`
// on other machines — and every link, control included, is a WebRTC data
// channel:
//
//	peer → room         join (authenticated with the run's secret)
//	coordinator         waits for stages peers; the first to join get the
//	                    stages in join order, the rest wait as spares
//	coordinator ↔ peer  control channel (rtc.Connect both ways)
//	coordinator → peer  setup{config, ranges, stage → peer ID}
//	peer ↔ neighbours   data channels to stage±1 (and 0 ↔ S-1 for the
//	                    tied embedding when S > 2)
//	peer → coordinator  ready; then the same commands as in-process.

// PeerArgs is how a peer process finds its run.
type PeerArgs struct {
	Signal     string `json:"signal"` // ws://HOST:PORT/ROOM
	SecretFile string `json:"secret_file"`
	ID         string `json:"id"`
	// ICEServers and Loopback configure this peer's WebRTC; the run's
	// config decides the links' shaping and everything else.
	ICEServers []string `json:"ice_servers"`
	Loopback   bool     `json:"loopback"`
	RelayOnly  bool     `json:"relay_only"`
	// KeyFile holds the peer's identity key (made on first use); "" is
	// the user's (identity.DefaultPath).
	KeyFile string `json:"key_file"`
}

// rtcConfig is a peer's WebRTC setup. TURN servers ("turn:HOST:PORT") get
// credentials derived from the run key for this peer, as the run's
// embedded TURN server (`narrowband signal --turn`) expects.
func rtcConfig(servers []string, loopback, relayOnly bool, key []byte, id string) rtc.Config {
	c := rtc.DefaultConfig()
	c.Loopback, c.RelayOnly = loopback, relayOnly
	// pion reports every socket it closes at teardown as a warning; only
	// its errors are worth a user's attention.
	c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	for _, s := range servers {
		srv := rtc.ICEServer{URLs: []string{s}}
		if config.IsTURNURL(s) {
			srv.Username, srv.Credential = signaling.TURNCredentials(key, id)
		}
		c.ICEServers = append(c.ICEServers, srv)
	}
	return c
}

// ReadSecret reads a run's secret from a file, refusing a short one and
// warning (on log) when others may read the file.
func ReadSecret(path string, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return "", fmt.Errorf("secret file %s: the secret is %d characters; use at least 16 (e.g. `head -c 32 /dev/urandom | xxd -p -c 64 > %s`)", path, len(s), path)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 && log != nil {
		log.Warn("the secret file can be read by other users of this machine, who could then join or relay through the run; make it private", "file", path, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()), "fix", "chmod 600 "+path)
	}
	return s, nil
}

// room is the placement of pipeline.transport = "webrtc": a room on the
// run's own signaling server, the coordinator (the driver) in it, peer
// processes started here (pipeline.local_peers) or joining from other
// machines. Stages go to the first peers to join; the rest wait as spares
// and take over a stage whose peer fails.
type room struct {
	cfg     config.Config
	layout  scheduler.Layout
	log     *slog.Logger
	coord   *signaling.Local
	rc      rtc.Config
	join    string
	ctrl    []transport.Conn
	holders []string
	procOf  map[string]*exec.Cmd
	closers []func() error
	name    string                     // the room's name: what a join proof is for
	keysMu  sync.Mutex                 // admit runs for the first peers at once
	keys    map[string]identity.Public // holder → the key it proved
	allow   map[identity.Public]bool   // pipeline.allow_keys; empty admits every key
	onRoom  func(Room)
	spawner
	// startPeer starts local peer i (pipeline.local_peers, or one that
	// joins a swarm: a [[faults.event]] of kind "join").
	startPeer func(i int) (string, error)
	procMu    sync.Mutex
	started   int
}

// WebRTC starts the run's signaling server (and its STUN/TURN server if
// configured), joins it as coordinator, starts the local peer processes and
// gives every stage to a peer, writing the run's secret (if none is
// configured) and signal.json into out.
func WebRTC(ctx context.Context, cfg config.Config, layout scheduler.Layout, out string, log *slog.Logger) (pipeline.Placement, error) {
	return WebRTCWith(ctx, cfg, layout, out, log, nil)
}

// Room is what a guest needs to join a run's room: the signaling URL, the
// room's join token (signaling.JoinToken; only where web.contribute is
// on) and the STUN/TURN servers; and how many stages its local peers leave
// vacant.
type Room struct {
	URL        string
	JoinToken  string
	ICEServers []string
	// Vacant is the stage the next peer to join would get (-1: every
	// stage is held or promised to a local peer; a guest would be a
	// spare), and Replica which of the stage's replicas it would be.
	Vacant, Replica int
}

// WebRTCWith is WebRTC that calls onRoom, if set, as soon as the room is
// open, before it waits for peers (the web view offers the room to its
// visitors from then on), and again each time peers take stages, with the
// stage the next newcomer would get.
func WebRTCWith(ctx context.Context, cfg config.Config, layout scheduler.Layout, out string, log *slog.Logger, onRoom func(Room)) (pipeline.Placement, error) {
	p := &room{onRoom: onRoom, cfg: cfg, layout: layout, log: log, procOf: map[string]*exec.Cmd{}, keys: map[string]identity.Public{}, allow: map[identity.Public]bool{}}
	for _, k := range cfg.Pipeline.AllowKeys {
		p.allow[identity.Public(k)] = true
	}
	if err := p.start(ctx, out); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *room) start(ctx context.Context, out string) error {
	cfg, ranges := p.cfg, p.layout.Ranges()
	S := len(ranges)
	n := S * cfg.Pipeline.ReplicaCount() // workers: every replica of every stage
	secret, secretFile := "", cfg.Pipeline.SecretFile
	if secretFile != "" {
		var err error
		if secret, err = ReadSecret(secretFile, p.log); err != nil {
			return err
		}
	} else {
		var b [32]byte
		rand.Read(b[:])
		secret = hex.EncodeToString(b[:])
		secretFile = filepath.Join(out, "secret")
		if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
			return fmt.Errorf("webrtc: write the run's secret: %w", err)
		}
	}
	key, err := signaling.DeriveKey(secret)
	if err != nil {
		return err
	}
	// Join tokens only where the run lets its web view's visitors in, and
	// never under the coordinator's name.
	srv, err := signaling.NewServer(signaling.Config{Key: key, Logger: p.log, JoinTokens: cfg.Web.Contribute, ReservedIDs: []string{CoordinatorID}})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Pipeline.SignalAddr)
	if err != nil {
		return fmt.Errorf("webrtc: pipeline.signal_addr = %q: %w", cfg.Pipeline.SignalAddr, err)
	}
	sctx, stop := context.WithCancel(context.Background())
	p.closers = append(p.closers, func() error { stop(); return nil })
	go srv.Serve(sctx, ln)
	servers := cfg.Pipeline.ICEServers
	if cfg.Pipeline.TURNAddr != "" {
		ts, err := signaling.StartTURN(signaling.TURNConfig{ListenUDP: cfg.Pipeline.TURNAddr, PublicIP: cfg.Pipeline.PublicIP, Key: key, Logger: p.log})
		if err != nil {
			return fmt.Errorf("webrtc: pipeline.turn_addr = %q: %w", cfg.Pipeline.TURNAddr, err)
		}
		p.closers = append(p.closers, ts.Close)
		p.log.Info("STUN/TURN", "addr", ts.Addr().String())
		servers = withOwnTURN(servers, cfg.Pipeline.PublicIP, ts.Addr())
	}
	var rb [6]byte
	rand.Read(rb[:])
	room := "run-" + hex.EncodeToString(rb[:])
	p.name = room
	// Peers on other machines cannot dial an unspecified address; with
	// public_ip set, the printed URL and join command use that instead.
	sa := ln.Addr().(*net.TCPAddr)
	host := sa.IP.String()
	if sa.IP.IsUnspecified() && cfg.Pipeline.PublicIP != "" {
		host = cfg.Pipeline.PublicIP
	}
	url := "ws://" + net.JoinHostPort(host, strconv.Itoa(sa.Port)) + "/" + room
	coord, err := srv.Attach(room, CoordinatorID)
	if err != nil {
		return err
	}
	p.closers = append(p.closers, coord.Close)
	join := fmt.Sprintf("narrowband peer --signal %s --secret-file %s", url, secretFile)
	for _, s := range servers {
		join += " --ice " + s
	}
	if cfg.Pipeline.RelayOnly {
		join += " --relay-only"
	}
	p.log.Info("signaling", "url", url, "secret_file", secretFile, "join", join)
	// Scripts (and peers started by hand) find the room here.
	if err := metrics.WriteJSON(filepath.Join(out, "signal.json"), map[string]string{"url": url, "secret_file": secretFile, "join": join}); err != nil {
		return err
	}

	local := cfg.Pipeline.LocalPeers
	if local < 0 {
		local = n + cfg.Pipeline.Spares
	}
	offer := Room{URL: url, ICEServers: servers, Vacant: -1}
	if cfg.Web.Contribute {
		offer.JoinToken = signaling.JoinToken(key, room)
	}
	if p.onRoom != nil {
		if local < n {
			// Worker i holds stage i mod S, replica i / S.
			offer.Vacant, offer.Replica = local%S, local/S
		}
		p.onRoom(offer)
	}
	p.startPeer = func(i int) (string, error) {
		// Each local peer stands for a machine of its own: it gets a key
		// of its own, kept in the run folder.
		id := fmt.Sprintf("peer-%d", i)
		args := PeerArgs{Signal: url, SecretFile: secretFile, ID: id, ICEServers: servers, Loopback: cfg.Pipeline.Loopback, RelayOnly: cfg.Pipeline.RelayOnly,
			KeyFile: filepath.Join(out, "keys", id+".key")}
		// The run made this peer's key, so an allow-list admits it.
		k, _, err := identity.LoadOrCreate(args.KeyFile)
		if err != nil {
			return "", fmt.Errorf("webrtc: key of local peer %s: %w", id, err)
		}
		p.keysMu.Lock()
		if len(p.allow) > 0 {
			p.allow[k.Public()] = true
		}
		p.keysMu.Unlock()
		cmd, err := p.spawn("NARROWBAND_PEER_ARGS", args)
		if err != nil {
			return "", fmt.Errorf("webrtc: start peer %d: %w", i, err)
		}
		p.procMu.Lock()
		p.procOf[args.ID] = cmd
		p.procMu.Unlock()
		return id, nil
	}
	for i := 0; i < local; i++ {
		if _, err := p.startPeer(i); err != nil {
			return err
		}
	}
	p.started = local

	// Wait for enough peers that prove their key (and are allowed); stages
	// go to them by name. A peer refused (or unreachable) is skipped, and
	// the run waits for another.
	wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	rc := rtcConfig(servers, cfg.Pipeline.Loopback, cfg.Pipeline.RelayOnly, key, CoordinatorID)
	p.coord, p.rc, p.join = coord, rc, join
	tried := map[string]bool{}
	for len(p.holders) < n {
		var batch []string
		for _, id := range sortedPeers(coord.Peers()) {
			if id != CoordinatorID && !tried[id] && len(p.holders)+len(batch) < n {
				batch = append(batch, id)
			}
		}
		if len(batch) == 0 {
			select {
			case <-wctx.Done():
				return fmt.Errorf("webrtc: %d of %d peers joined %s and were admitted before the timeout; start more with `narrowband peer --signal %s --secret-file %s`", len(p.holders), n, room, url, secretFile)
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		conns := make([]transport.Conn, len(batch))
		errs := make([]error, len(batch))
		var wg sync.WaitGroup
		for k, id := range batch {
			tried[id] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := rtc.Connect(wctx, coord, id, rc)
				if err != nil {
					errs[k] = fmt.Errorf("control channel: %w", err)
					return
				}
				if err := p.admit(wctx, c, id); err != nil {
					c.Close()
					errs[k] = err
					return
				}
				conns[k] = c
			}()
		}
		wg.Wait()
		for k, id := range batch {
			if errs[k] != nil {
				if wctx.Err() != nil {
					return fmt.Errorf("webrtc: peer %s: %w", id, errs[k])
				}
				p.log.Warn("peer not admitted; waiting for another", "peer", id, "err", errs[k])
				continue
			}
			p.holders = append(p.holders, id)
			p.ctrl = append(p.ctrl, conns[k])
		}
		if p.onRoom != nil {
			// Stages go in join order: the next newcomer gets the next
			// one, or waits as a spare once all are held.
			offer.Vacant, offer.Replica = -1, 0
			if k := len(p.holders); k < n {
				offer.Vacant, offer.Replica = k%S, k/S
			}
			p.onRoom(offer)
		}
	}
	text, err := cfg.TOML()
	if err != nil {
		return err
	}
	for i, c := range p.ctrl {
		if err := sendJSON(wctx, c, rtcSetup{Config: string(text), Ranges: ranges, Peers: p.holders, Stage: i % S, Replica: i / S}); err != nil {
			return fmt.Errorf("webrtc: setup of stage %d: %w", i, err)
		}
	}
	for i, c := range p.ctrl {
		var ok struct {
			Err string `json:"err"`
		}
		if err := recvJSON(wctx, c, &ok); err != nil {
			return fmt.Errorf("webrtc: stage %d (%s) did not get ready: %w", i, p.holders[i], err)
		}
		if ok.Err != "" {
			return fmt.Errorf("webrtc: stage %d (%s): %s", i, p.holders[i], ok.Err)
		}
	}
	return nil
}

func (p *room) Control() []transport.Conn { return p.ctrl }
func (p *room) Holders() []string         { return p.holders }
func (p *room) Address() string           { return "WebRTC" }
func (p *room) CanHandOver() bool         { return true }
func (p *room) JoinCommand() string       { return p.join }

// Spares are the peers in the room but the coordinator, by name; the
// driver leaves out holders and failed peers.
func (p *room) Spares() []string {
	var out []string
	for _, id := range sortedPeers(p.coord.Peers()) {
		if id != CoordinatorID {
			out = append(out, id)
		}
	}
	return out
}

func (p *room) Claim(ctx context.Context, spare string) (transport.Conn, error) {
	c, err := rtc.Connect(ctx, p.coord, spare, p.rc)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, c.Close)
	if err := p.admit(ctx, c, spare); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// admit has the peer on c prove its key, and refuses a key the run's
// allow-list does not name (telling the peer why).
func (p *room) admit(ctx context.Context, c transport.Conn, peer string) error {
	ch := identity.Challenge()
	if err := sendJSON(ctx, c, joinChallenge{Challenge: ch}); err != nil {
		return fmt.Errorf("join challenge to %s: %w", peer, err)
	}
	var jp joinProof
	if err := recvJSON(ctx, c, &jp); err != nil {
		return fmt.Errorf("join proof from %s: %w", peer, err)
	}
	if err := identity.Check(jp.Key, p.name, peer, ch, jp.Proof); err != nil {
		return fmt.Errorf("peer %s did not prove its key: %w", peer, err)
	}
	if len(p.allow) > 0 && !p.allow[jp.Key] {
		sendJSON(ctx, c, map[string]string{"err": fmt.Sprintf("this run admits only the keys in pipeline.allow_keys, and %s is not one of them", jp.Key)})
		return fmt.Errorf("%w: peer %s's key %s is not in pipeline.allow_keys", pipeline.ErrNotAllowed, peer, jp.Key.Short())
	}
	p.keysMu.Lock()
	p.keys[peer] = jp.Key
	p.keysMu.Unlock()
	return nil
}

// Key is the key holder proved when it joined.
func (p *room) Key(holder string) identity.Public {
	p.keysMu.Lock()
	defer p.keysMu.Unlock()
	return p.keys[holder]
}

func (p *room) Setup(ctx context.Context, c transport.Conn, stage int, holders []string) error {
	text, err := p.cfg.TOML()
	if err != nil {
		return err
	}
	return setupAndWait(ctx, c, rtcSetup{Config: string(text), Ranges: p.layout.Ranges(), Peers: holders, Stage: stage})
}

// setupAndWait sends a claimed peer its setup and waits for its word that
// it is ready (or why it refused).
func setupAndWait(ctx context.Context, c transport.Conn, su rtcSetup) error {
	if err := sendJSON(ctx, c, su); err != nil {
		return err
	}
	var ok struct {
		Err string `json:"err"`
	}
	if err := recvJSON(ctx, c, &ok); err != nil {
		return fmt.Errorf("did not get ready: %w", err)
	}
	if ok.Err != "" {
		return fmt.Errorf("%w: %s", pipeline.ErrSpareRefused, ok.Err)
	}
	return nil
}

// StartPeer starts one more local peer, which joins the room (a swarm's
// [[faults.event]] of kind "join").
func (p *room) StartPeer(context.Context) (string, error) {
	p.procMu.Lock()
	i := p.started
	p.started++
	p.procMu.Unlock()
	return p.startPeer(i)
}

// SetupReplica sets the peer claimed on c up as node of stage, linked to
// peers (node → peer): it dials each, as each dials it when the driver
// says (ctrlLinkTo).
func (p *room) SetupReplica(ctx context.Context, c transport.Conn, stage, node int, peers map[int]pipeline.SwarmPeer) error {
	text, err := p.cfg.TOML()
	if err != nil {
		return err
	}
	mesh, ofs := map[int]string{}, map[int]int{}
	for k, sp := range peers {
		mesh[k], ofs[k] = sp.Name, sp.Stage
	}
	return setupAndWait(ctx, c, rtcSetup{Config: string(text), Ranges: p.layout.Ranges(), Stage: stage, Node: node, Mesh: mesh, Ofs: ofs, Joins: true})
}

// DialsPeers: a joiner's links are new ICE sessions, which both ends open.
func (p *room) DialsPeers() bool { return true }

// Kill SIGKILLs a local peer process.
func (p *room) Kill(holder string) error {
	p.procMu.Lock()
	cmd := p.procOf[holder]
	p.procMu.Unlock()
	if cmd == nil {
		return pipeline.ErrCannotKill
	}
	return cmd.Process.Kill()
}

// Close closes the control links (the peers end their stages), the room and
// the servers, then waits for the local peer processes.
func (p *room) Close() error {
	for _, c := range p.ctrl {
		if c != nil {
			c.Close()
		}
	}
	for _, c := range p.closers {
		c()
	}
	p.stop()
	return nil
}

// withOwnTURN adds the run's embedded STUN/TURN server to the ICE servers,
// at the address peers reach it by (publicIP, else the address it listens
// on), unless the user listed it already.
func withOwnTURN(servers []string, publicIP string, addr *net.UDPAddr) []string {
	host := addr.IP.String()
	if publicIP != "" {
		host = publicIP
	}
	hp := net.JoinHostPort(host, strconv.Itoa(addr.Port))
	out := append([]string(nil), servers...)
	for _, u := range []string{"stun:" + hp, "turn:" + hp} {
		if !slices.ContainsFunc(out, func(s string) bool { return s == u || strings.HasPrefix(s, u+"?") }) {
			out = append(out, u)
		}
	}
	return out
}

func sortedPeers(ids []string) []string {
	out := append([]string(nil), ids...)
	sort.Strings(out)
	return out
}

// RunPeer is a peer process: it joins the run's room, waits for the
// coordinator to give it a stage (a spare waits until it is needed), links
// to its neighbours and serves commands until the run ends.
func RunPeer(ctx context.Context, a PeerArgs, log *slog.Logger) error {
	rtc.TuneGC()
	secret, err := ReadSecret(a.SecretFile, log)
	if err != nil {
		return err
	}
	keyFile := a.KeyFile
	if keyFile == "" {
		if keyFile, err = identity.DefaultPath(); err != nil {
			return err
		}
	}
	idKey, created, err := identity.LoadOrCreate(keyFile)
	if err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	if created {
		log.Info("made this peer's key", "file", keyFile, "key", idKey.Public())
	}
	if a.ID == "" {
		var b [4]byte
		rand.Read(b[:])
		a.ID = "peer-" + hex.EncodeToString(b[:])
	}
	// A server that is busy, full or not up yet is tried again with
	// back-off (each retry logged with its reason); a wrong secret is not.
	client, err := signaling.DialRetry(ctx, a.Signal, a.ID, secret, signaling.RetryOptions{Client: signaling.ClientOptions{Logger: log}})
	if err != nil {
		return fmt.Errorf("peer %s: %w", a.ID, err)
	}
	defer client.Close()
	key, err := signaling.DeriveKey(secret)
	if err != nil {
		return err
	}
	rc := rtcConfig(a.ICEServers, a.Loopback, a.RelayOnly, key, a.ID)
	room := a.Signal[strings.LastIndexByte(a.Signal, '/')+1:]
	return ServePeer(ctx, client, room, idKey, rc, nil, log)
}
