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

// CoordinatorID is the coordinator's name in the room.
const CoordinatorID = "coordinator"

type rtcSetup struct {
	Config string            `json:"config"`
	Ranges []scheduler.Range `json:"ranges"`
	Peers  []string          `json:"peers"` // stage → peer ID
	Stage  int               `json:"stage"`
	Err    string            `json:"err,omitempty"` // the run refuses this peer
}

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
	spawner
}

// WebRTC starts the run's signaling server (and its STUN/TURN server if
// configured), joins it as coordinator, starts the local peer processes and
// gives every stage to a peer, writing the run's secret (if none is
// configured) and signal.json into out.
func WebRTC(ctx context.Context, cfg config.Config, layout scheduler.Layout, out string, log *slog.Logger) (pipeline.Placement, error) {
	p := &room{cfg: cfg, layout: layout, log: log, procOf: map[string]*exec.Cmd{}, keys: map[string]identity.Public{}, allow: map[identity.Public]bool{}}
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
	srv, err := signaling.NewServer(signaling.Config{Key: key, Logger: p.log})
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
		local = S + cfg.Pipeline.Spares
	}
	for i := 0; i < local; i++ {
		// Each local peer stands for a machine of its own: it gets a key
		// of its own, kept in the run folder.
		id := fmt.Sprintf("peer-%d", i)
		args := PeerArgs{Signal: url, SecretFile: secretFile, ID: id, ICEServers: servers, Loopback: cfg.Pipeline.Loopback, RelayOnly: cfg.Pipeline.RelayOnly,
			KeyFile: filepath.Join(out, "keys", id+".key")}
		// The run made this peer's key, so an allow-list admits it.
		k, _, err := identity.LoadOrCreate(args.KeyFile)
		if err != nil {
			return fmt.Errorf("webrtc: key of local peer %s: %w", id, err)
		}
		if len(p.allow) > 0 {
			p.allow[k.Public()] = true
		}
		cmd, err := p.spawn("NARROWBAND_PEER_ARGS", args)
		if err != nil {
			return fmt.Errorf("webrtc: start peer %d: %w", i, err)
		}
		p.procOf[args.ID] = cmd
	}

	// Wait for enough peers that prove their key (and are allowed); stages
	// go to them by name. A peer refused (or unreachable) is skipped, and
	// the run waits for another.
	wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	rc := rtcConfig(servers, cfg.Pipeline.Loopback, cfg.Pipeline.RelayOnly, key, CoordinatorID)
	p.coord, p.rc, p.join = coord, rc, join
	tried := map[string]bool{}
	for len(p.holders) < S {
		var batch []string
		for _, id := range sortedPeers(coord.Peers()) {
			if id != CoordinatorID && !tried[id] && len(p.holders)+len(batch) < S {
				batch = append(batch, id)
			}
		}
		if len(batch) == 0 {
			select {
			case <-wctx.Done():
				return fmt.Errorf("webrtc: %d of %d peers joined %s and were admitted before the timeout; start more with `narrowband peer --signal %s --secret-file %s`", len(p.holders), S, room, url, secretFile)
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
	}
	text, err := cfg.TOML()
	if err != nil {
		return err
	}
	for i, c := range p.ctrl {
		if err := sendJSON(wctx, c, rtcSetup{Config: string(text), Ranges: ranges, Peers: p.holders, Stage: i}); err != nil {
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
	if err := sendJSON(ctx, c, rtcSetup{Config: string(text), Ranges: p.layout.Ranges(), Peers: holders, Stage: stage}); err != nil {
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

// Kill SIGKILLs a local peer process.
func (p *room) Kill(holder string) error {
	cmd := p.procOf[holder]
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
		return fmt.Errorf("peer %s: join challenge: %w", a.ID, err)
	}
	room := a.Signal[strings.LastIndexByte(a.Signal, '/')+1:]
	if err := sendJSON(ctx, ctrl, joinProof{Key: idKey.Public(), Proof: idKey.Prove(room, a.ID, jc.Challenge)}); err != nil {
		return fmt.Errorf("peer %s: join proof: %w", a.ID, err)
	}
	var su rtcSetup
	if err := recvJSON(ctx, ctrl, &su); err != nil {
		return fmt.Errorf("peer %s: setup: %w", a.ID, err)
	}
	if su.Err != "" {
		return fmt.Errorf("peer %s (key %s): the run refused it: %s", a.ID, idKey.Public().Short(), su.Err)
	}
	w, closers, err := setupRTCWorker(ctx, client, rc, su, ctrl)
	return serveWorker(ctx, ctrl, w, closers, err, log.With("peer", a.ID, "stage", su.Stage))
}

func setupRTCWorker(ctx context.Context, client *signaling.Client, rc rtc.Config, su rtcSetup, ctrl transport.Conn) (*pipeline.Worker, []func() error, error) {
	cfg, err := workerConfig(su.Config)
	if err != nil {
		return nil, nil, err
	}
	layout, err := scheduler.NewLayout(su.Ranges)
	if err != nil {
		return nil, nil, fmt.Errorf("setup: %w", err)
	}
	S, i := layout.Stages(), su.Stage
	if len(su.Peers) != S || i < 0 || i >= S {
		return nil, nil, fmt.Errorf("setup for %d stages with %d peers, stage %d", S, len(su.Peers), i)
	}
	type want struct {
		peer int
		dst  *transport.Conn
	}
	links := pipeline.Links{Ctrl: ctrl}
	var wants []want
	if i > 0 {
		wants = append(wants, want{i - 1, &links.Prev})
	}
	if i+1 < S {
		wants = append(wants, want{i + 1, &links.Next})
	}
	if t := layout.Tied(i); t >= 0 && layout.TiedOwnLink() {
		wants = append(wants, want{t, &links.Tied})
	}
	var closers []func() error
	var mu sync.Mutex
	errs := make([]error, len(wants))
	var wg sync.WaitGroup
	for k, wnt := range wants {
		if su.Peers[wnt.peer] == "" {
			// The neighbour's stage is vacant: it links to this peer
			// when its own hand-over comes.
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := rtc.Connect(ctx, client, su.Peers[wnt.peer], rc)
			if err != nil {
				errs[k] = fmt.Errorf("link to stage %d (%s): %w", wnt.peer, su.Peers[wnt.peer], err)
				return
			}
			mu.Lock()
			closers = append(closers, c.Close)
			mu.Unlock()
			sc, err := pipeline.ShapeLink(cfg, layout, i, wnt.peer, c)
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
			return nil, closers, e
		}
	}
	if S == 2 {
		if i == 0 {
			links.Tied = links.Next
		} else {
			links.Tied = links.Prev
		}
	}
	w, err := pipeline.NewWorker(cfg, layout, i, links)
	if err == nil {
		w.SetOwnProcess()
		limitMemory(cfg, layout, i)
	}
	if err != nil {
		return nil, closers, err
	}
	// A failed link, or a neighbour that moved to another peer, is
	// re-established through signaling: a new ICE session.
	w.SetRelink(func(ctx context.Context, peer int, peers []string) (transport.Conn, error) {
		if peer < 0 || peer >= S || len(peers) != S {
			return nil, fmt.Errorf("relink to stage %d of %d peers", peer, len(peers))
		}
		c, err := rtc.Connect(ctx, client, peers[peer], rc)
		if err != nil {
			return nil, err
		}
		return pipeline.ShapeLink(cfg, layout, i, peer, c)
	})
	return w, closers, err
}
