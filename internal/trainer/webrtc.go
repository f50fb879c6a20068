package trainer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
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

// ReadSecret reads a run's secret from a file, refusing a short one.
func ReadSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return "", fmt.Errorf("secret file %s: the secret is %d characters; use at least 16 (e.g. `head -c 32 /dev/urandom | xxd -p -c 64 > %s`)", path, len(s), path)
	}
	return s, nil
}

// startRTC starts the signaling server, joins it as coordinator, starts the
// local peer processes and sets up every stage.
func (p *pipeline) startRTC(ctx context.Context, cfg config.Config, ranges []scheduler.Range, out string) error {
	S := len(ranges)
	secret, secretFile := "", cfg.Pipeline.SecretFile
	if secretFile != "" {
		var err error
		if secret, err = ReadSecret(secretFile); err != nil {
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
		args := PeerArgs{Signal: url, SecretFile: secretFile, ID: fmt.Sprintf("peer-%d", i), ICEServers: servers, Loopback: cfg.Pipeline.Loopback, RelayOnly: cfg.Pipeline.RelayOnly}
		if err := p.spawn("NARROWBAND_PEER_ARGS", args); err != nil {
			return fmt.Errorf("webrtc: start peer %d: %w", i, err)
		}
		p.procOf[args.ID] = p.procs[len(p.procs)-1]
	}

	// Wait for enough peers; assign stages in the order they joined.
	wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	var order []string
	seen := map[string]bool{}
	for len(order) < S {
		for _, id := range sortedPeers(coord.Peers()) {
			if !seen[id] && id != CoordinatorID {
				seen[id] = true
				order = append(order, id)
			}
		}
		if len(order) >= S {
			break
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("webrtc: %d of %d peers joined %s before the timeout; start more with `narrowband peer --signal %s --secret-file %s`", len(order), S, room, url, secretFile)
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.peers = order[:S]
	rc := rtcConfig(servers, cfg.Pipeline.Loopback, cfg.Pipeline.RelayOnly, key, CoordinatorID)
	p.coord, p.rc, p.join = coord, rc, join
	p.ctrl = make([]transport.Conn, S)
	errs := make([]error, S)
	var wg sync.WaitGroup
	for i, id := range p.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := rtc.Connect(wctx, coord, id, rc)
			if err != nil {
				errs[i] = fmt.Errorf("webrtc: control channel to %s (stage %d): %w", id, i, err)
				return
			}
			p.ctrl[i] = c
		}()
	}
	wg.Wait()
	for _, c := range p.ctrl {
		if c != nil {
			p.closers = append(p.closers, c.Close)
		}
	}
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	text, err := cfg.TOML()
	if err != nil {
		return err
	}
	for i, c := range p.ctrl {
		if err := sendJSON(wctx, c, rtcSetup{Config: string(text), Ranges: ranges, Peers: p.peers, Stage: i}); err != nil {
			return fmt.Errorf("webrtc: setup of stage %d: %w", i, err)
		}
	}
	for i, c := range p.ctrl {
		var ok struct {
			Err string `json:"err"`
		}
		if err := recvJSON(wctx, c, &ok); err != nil {
			return fmt.Errorf("webrtc: stage %d (%s) did not get ready: %w", i, p.peers[i], err)
		}
		if ok.Err != "" {
			return fmt.Errorf("webrtc: stage %d (%s): %s", i, p.peers[i], ok.Err)
		}
	}
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
	secret, err := ReadSecret(a.SecretFile)
	if err != nil {
		return err
	}
	if a.ID == "" {
		var b [4]byte
		rand.Read(b[:])
		a.ID = "peer-" + hex.EncodeToString(b[:])
	}
	client, err := signaling.Dial(ctx, a.Signal, a.ID, secret)
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
	var su rtcSetup
	if err := recvJSON(ctx, ctrl, &su); err != nil {
		return fmt.Errorf("peer %s: setup: %w", a.ID, err)
	}
	w, closers, err := setupRTCWorker(ctx, client, rc, su, ctrl)
	return serveWorker(ctx, ctrl, w, closers, err, log.With("peer", a.ID, "stage", su.Stage))
}

func setupRTCWorker(ctx context.Context, client *signaling.Client, rc rtc.Config, su rtcSetup, ctrl transport.Conn) (*worker, []func() error, error) {
	cfg, err := workerConfig(su.Config)
	if err != nil {
		return nil, nil, err
	}
	S, i := len(su.Ranges), su.Stage
	if len(su.Peers) != S || i < 0 || i >= S {
		return nil, nil, fmt.Errorf("setup for %d stages with %d peers, stage %d", S, len(su.Peers), i)
	}
	type want struct {
		peer int
		dst  *transport.Conn
		seed uint64
	}
	links := Links{Ctrl: ctrl}
	var wants []want
	if i > 0 {
		wants = append(wants, want{i - 1, &links.Prev, uint64(2 * i)})
	}
	if i+1 < S {
		wants = append(wants, want{i + 1, &links.Next, uint64(2*i + 1)})
	}
	if S > 2 && i == 0 {
		wants = append(wants, want{S - 1, &links.Tied, 0x71ed1})
	}
	if S > 2 && i == S-1 {
		wants = append(wants, want{0, &links.Tied, 0x71ed2})
	}
	var closers []func() error
	var mu sync.Mutex
	errs := make([]error, len(wants))
	var wg sync.WaitGroup
	for k, wnt := range wants {
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
			sc, err := shapeLink(cfg, i, wnt.peer, wnt.seed, c)
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
	w, err := newWorker(cfg, i, su.Ranges, links)
	if err != nil {
		return nil, closers, err
	}
	// A failed link, or a neighbour that moved to another peer, is
	// re-established through signaling: a new ICE session.
	w.relink = func(ctx context.Context, peer int, peers []string) (transport.Conn, error) {
		if peer < 0 || peer >= S || len(peers) != S {
			return nil, fmt.Errorf("relink to stage %d of %d peers", peer, len(peers))
		}
		seed := uint64(2*i + 1)
		switch {
		case peer == i-1:
			seed = uint64(2 * i)
		case peer != i+1 && i == 0:
			seed = 0x71ed1
		case peer != i+1 && i == S-1:
			seed = 0x71ed2
		}
		c, err := rtc.Connect(ctx, client, peers[peer], rc)
		if err != nil {
			return nil, err
		}
		return shapeLink(cfg, i, peer, seed, c)
	}
	return w, closers, err
}

// shapeLink shapes what stage i sends to peer over c with the config's
// profile for that link.
func shapeLink(cfg config.Config, i, peer int, seed uint64, c transport.Conn) (transport.Conn, error) {
	prof := cfg.LinkProfile(min(i, peer), max(i, peer))
	if !prof.Shaped() {
		return c, nil
	}
	return transport.Shape(c, transport.LinkProfile{BandwidthMbps: prof.BandwidthMbps, LatencyMs: prof.LatencyMs, JitterMs: prof.JitterMs, Loss: prof.Loss},
		transport.ShapeOptions{Seed: cfg.Run.Seed ^ seed, CloseGrace: -1})
}
