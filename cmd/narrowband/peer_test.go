package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/identity"
	"github.com/narrowband/narrowband/signaling"
)

// TestPeersJoinFromTheCommandLine: a WebRTC run that starts only one of its
// two peers itself waits until a second `narrowband peer`, started by hand
// with the run's URL and secret, joins; then it trains to the end.
func TestPeersJoinFromTheCommandLine(t *testing.T) {
	if testing.Short() {
		t.Skip("starts WebRTC peer processes")
	}
	dir := t.TempDir()
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	cfg := writeFile(t, dir, "rtc.toml", strings.Replace(tinyTOML, "%s", strs, 1)+`
[pipeline]
stages = 2
transport = "webrtc"
local_peers = 1
`)
	out := filepath.Join(dir, "run")
	run := start(t, nil, "", "run", cfg, "--out", out, "--set", "model.n_layer=2")
	sig := readSignal(t, out, run)
	// A peer with the wrong secret is refused, clearly.
	wrong := writeFile(t, dir, "wrong", "this-is-not-the-secret-of-the-run\n")
	code, _, errOut := narrowband(t, "peer", "--signal", sig.URL, "--secret-file", wrong, "--loopback")
	if code == 0 || !strings.Contains(errOut, "auth") {
		t.Errorf("a peer with the wrong secret: exit %d, stderr:\n%s", code, errOut)
	}
	peer := start(t, nil, "", "peer", "--signal", sig.URL, "--secret-file", sig.SecretFile, "--id", "by-hand", "--loopback")
	if err := run.wait(120 * time.Second); err != nil {
		t.Fatalf("run: %v\n%s", err, run.stderr)
	}
	if err := peer.wait(30 * time.Second); err != nil {
		t.Errorf("the peer started by hand: %v\n%s", err, peer.stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "summary.json")); err != nil {
		t.Fatal("no summary.json after the run")
	}
}

// TestSignalCommandServes: the standalone signaling server survives junk
// on a socket and keeps admitting peers that hold the secret.
func TestSignalCommandServes(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "s", "0123456789abcdef0123456789abcdef\n")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	sig := exec.Command(os.Args[0], "signal", "--secret-file", secret, "--addr", addr)
	sig.Env = append(os.Environ(), "NARROWBAND_MAIN=1")
	if err := sig.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sig.Process.Kill(); sig.Wait() }()
	var c net.Conn
	for i := 0; i < 100; i++ {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GARBAGE\r\n\r\n")
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := signaling.Dial(ctx, "ws://"+addr+"/room1", "alice", "0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatalf("a peer with the right secret after the junk: %v", err)
	}
	cl.Close()
	if _, err := signaling.Dial(ctx, "ws://"+addr+"/room1", "mallory", "not-the-secret-at-all-0000"); err == nil {
		t.Error("a peer with the wrong secret was admitted")
	}
	code, _, _ := narrowband(t, "signal", "--addr", addr)
	if code == 0 {
		t.Error("signal without --secret-file succeeded")
	}
}

// TestAllowedKeysOnly: a run with pipeline.allow_keys refuses a peer whose
// key it does not list (telling it so) and trains with one it does; the
// run's ledger names that peer's key for its stage.
func TestAllowedKeysOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts WebRTC peer processes")
	}
	dir := t.TempDir()
	allowed, _, err := identity.LoadOrCreate(filepath.Join(dir, "allowed.key"))
	if err != nil {
		t.Fatal(err)
	}
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	cfg := writeFile(t, dir, "rtc.toml", strings.Replace(tinyTOML, "%s", strs, 1)+fmt.Sprintf(`
[pipeline]
stages = 2
transport = "webrtc"
local_peers = 1
allow_keys = [%q]
`, allowed.Public()))
	out := filepath.Join(dir, "run")
	run := start(t, nil, "", "run", cfg, "--out", out, "--set", "model.n_layer=2")
	sig := readSignal(t, out, run)
	code, _, errOut := narrowband(t, "peer", "--signal", sig.URL, "--secret-file", sig.SecretFile, "--id", "stranger", "--key", filepath.Join(dir, "stranger.key"), "--loopback")
	if code == 0 || !strings.Contains(errOut, "allow_keys") {
		t.Errorf("a peer with a key the run does not list: exit %d\n%s", code, errOut)
	}
	peer := start(t, nil, "", "peer", "--signal", sig.URL, "--secret-file", sig.SecretFile, "--id", "friend", "--key", filepath.Join(dir, "allowed.key"), "--loopback")
	if err := run.wait(120 * time.Second); err != nil {
		t.Fatalf("run: %v\n%s\npeer:\n%s", err, run.stderr, peer.stderr)
	}
	code, stdout, stderr := narrowband(t, "ledger", "verify", out)
	if code != 0 || !strings.Contains(stdout, allowed.Public().Short()) || !strings.Contains(stdout, "friend") {
		t.Errorf("ledger verify: exit %d, want the allowed key's share\n%s%s", code, stdout, stderr)
	}
}
