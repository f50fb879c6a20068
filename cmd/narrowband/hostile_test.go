package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
)

// What a hostile tester did (issue #15), done again by the test suite.

// TestInterruptThenResume: SIGINT in the middle of a run finishes the step,
// saves it, prints the command that resumes and exits 130; that command
// gives the loss curve of an uninterrupted run, bit for bit.
func TestInterruptThenResume(t *testing.T) {
	dir := t.TempDir()
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	cfg := writeFile(t, dir, "tiny.toml", strings.Replace(tinyTOML, "%s", strs, 1))
	// Two stages over links of 20 ms: each step takes at least 40 ms, so
	// the run is still going when the signal comes.
	set := []string{"--set", "run.steps=40", "--set", "train.eval_interval=10", "--set", "model.n_layer=2", "--set", "pipeline.stages=2", "--set", "network.latency_ms=20"}
	whole := filepath.Join(dir, "whole")
	if code, _, stderr := narrowband(t, append([]string{"run", cfg, "--out", whole}, set...)...); code != 0 {
		t.Fatalf("uninterrupted run: exit %d\n%s", code, stderr)
	}
	out := filepath.Join(dir, "broken")
	run := start(t, nil, "", append([]string{"run", cfg, "--out", out}, set...)...)
	for deadline := time.Now().Add(60 * time.Second); ; {
		if recs, err := metrics.ReadJSONL(filepath.Join(out, "metrics.jsonl")); err == nil && len(recs) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run never got to step 3:\n%s", run.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	run.cmd.Process.Signal(os.Interrupt)
	err := run.wait(30 * time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted run: %v, want exit 130\n%s", err, run.stderr)
	}
	m := regexp.MustCompile(`resume with: narrowband (run \S+ --resume \S+)`).FindStringSubmatch(run.stderr.String())
	if m == nil || !strings.Contains(run.stderr.String(), "saved "+filepath.Join(out, "train_state.safetensors")) {
		t.Fatalf("the stop message does not say what was saved and how to resume:\n%s", run.stderr)
	}
	if code, _, stderr := narrowband(t, strings.Fields(m[1])...); code != 0 {
		t.Fatalf("narrowband %s: exit %d\n%s", m[1], code, stderr)
	}
	lw, err := metrics.Losses(filepath.Join(whole, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lr, err := metrics.Losses(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lw) != len(lr) {
		t.Fatalf("%d loss values after resuming, %d uninterrupted", len(lr), len(lw))
	}
	for i := range lw {
		if math.Float64bits(lw[i]) != math.Float64bits(lr[i]) {
			t.Fatalf("value %d: resumed %v, uninterrupted %v", i, lr[i], lw[i])
		}
	}
}

// TestSigtermStopsEveryCommand: a run waiting for peers, a peer waiting for
// its signaling server and a signaling server all end on SIGTERM, in well
// under a second on this machine (the figure is logged; the bound here is
// loose because the machine is shared).
func TestSigtermStopsEveryCommand(t *testing.T) {
	dir := t.TempDir()
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	cfg := writeFile(t, dir, "rtc.toml", strings.Replace(tinyTOML, "%s", strs, 1)+"\n[pipeline]\nstages = 2\ntransport = \"webrtc\"\nlocal_peers = 0\n")
	secret := writeFile(t, dir, "s", "0123456789abcdef0123456789abcdef\n")
	os.Chmod(secret, 0o600)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		name  string
		args  []string
		ready func() bool
	}{
		{"run waiting for peers", []string{"run", cfg, "--out", filepath.Join(dir, "run"), "--set", "model.n_layer=2"}, func() bool {
			_, err := os.Stat(filepath.Join(dir, "run", "signal.json"))
			return err == nil
		}},
		{"signal", []string{"signal", "--secret-file", secret, "--addr", addr}, func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		}},
		{"peer with no server", []string{"peer", "--signal", "ws://127.0.0.1:1/room", "--secret-file", secret, "--loopback"}, func() bool { return true }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := start(t, nil, "", c.args...)
			for deadline := time.Now().Add(30 * time.Second); !c.ready(); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("never got ready:\n%s", p.stderr)
				}
			}
			time.Sleep(300 * time.Millisecond)
			t0 := time.Now()
			p.cmd.Process.Signal(syscall.SIGTERM)
			err := p.wait(10 * time.Second)
			if errors.Is(err, errStillRunning) {
				t.Fatalf("still running 10 s after SIGTERM:\n%s", p.stderr)
			}
			t.Logf("ended %v after SIGTERM (%v)", time.Since(t0).Round(time.Millisecond), err)
		})
	}
}

// TestEndlessTextIsRefused: eval of /dev/zero or a named pipe is refused at
// once instead of reading forever.
func TestEndlessTextIsRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	syscall.Mkfifo(fifo, 0o644)
	ckpt := filepath.Join(dir, "none.safetensors")
	for _, text := range []string{"/dev/zero", fifo} {
		code, _, stderr := narrowband(t, "eval", "--checkpoint", ckpt, "--text", text)
		if code == 0 || !strings.Contains(stderr, "not a regular file") {
			t.Errorf("eval --text %s: exit %d\n%s", text, code, stderr)
		}
	}
}

// TestEverySubcommandHasHelp: --help prints the subcommand's usage with
// each of its flags and exits 0 (`run --help` used to say "unknown flag").
func TestEverySubcommandHasHelp(t *testing.T) {
	for cmd, flags := range map[string][]string{
		"run":       {"--set", "--out", "--resume", "--force"},
		"eval":      {"--checkpoint", "--text"},
		"sample":    {"--checkpoint", "--prompt", "--tokens", "--temperature", "--top-k", "--seed"},
		"signal":    {"--secret-file", "--addr", "--turn", "--public-ip"},
		"peer":      {"--signal", "--secret-file", "--id", "--ice", "--loopback", "--relay-only"},
		"plot":      {"--out"},
		"simulate":  {"--set", "--json"},
		"tokenizer": {"--vocab", "--out"},
	} {
		for _, h := range []string{"--help", "-h"} {
			args := []string{cmd, h}
			if cmd == "tokenizer" {
				args = []string{cmd, "train", h}
			}
			code, stdout, stderr := narrowband(t, args...)
			if code != 0 || !regexp.MustCompile(`usage:\s+narrowband `+cmd).MatchString(stdout) {
				t.Errorf("narrowband %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, stdout, stderr)
				continue
			}
			for _, f := range flags {
				if !strings.Contains(stdout, f) {
					t.Errorf("narrowband %v does not explain %s", args, f)
				}
			}
		}
	}
}

// TestReadableSecretIsWarnedAbout: a secret file others can read is used,
// with a warning that says how to fix it.
func TestReadableSecretIsWarnedAbout(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "s", "0123456789abcdef0123456789abcdef\n")
	os.Chmod(secret, 0o644)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p := start(t, nil, "", "signal", "--secret-file", secret, "--addr", addr)
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(p.stderr.String(), "chmod 600"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about a secret file of mode 0644:\n%s", p.stderr)
		}
	}
}

// TestSampleRefusesADivergedCheckpoint: a checkpoint whose weights are NaN
// is refused by name instead of sampled into garbage with exit 0.
func TestSampleRefusesADivergedCheckpoint(t *testing.T) {
	dir := t.TempDir()
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	cfg := writeFile(t, dir, "tiny.toml", strings.Replace(tinyTOML, "%s", strs, 1))
	out := filepath.Join(dir, "run")
	if code, _, stderr := narrowband(t, "run", cfg, "--out", out, "--set", "run.steps=2"); code != 0 {
		t.Fatal(stderr)
	}
	ckpt := filepath.Join(out, "checkpoint.safetensors")
	b, err := os.ReadFile(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	// The last 4 bytes are the last weight: make it a NaN.
	copy(b[len(b)-4:], []byte{0x00, 0x00, 0xc0, 0x7f})
	os.WriteFile(ckpt, b, 0o644)
	code, stdout, stderr := narrowband(t, "sample", "--checkpoint", ckpt, "--tokens", "5")
	if code == 0 || !strings.Contains(stderr, "not all finite") || stdout != "" {
		t.Errorf("sample from a NaN checkpoint: exit %d, stdout %q\n%s", code, stdout, stderr)
	}
}

// TestFloodDoesNotLockPeersOut: while one address keeps opening sockets to
// the run's signaling server and never authenticates, a peer started by
// hand from another address joins and the run trains to the end.
func TestFloodDoesNotLockPeersOut(t *testing.T) {
	if testing.Short() {
		t.Skip("floods a signaling server and starts WebRTC peers")
	}
	dir := t.TempDir()
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	cfg := writeFile(t, dir, "rtc.toml", strings.Replace(tinyTOML, "%s", strs, 1)+"\n[pipeline]\nstages = 2\ntransport = \"webrtc\"\nlocal_peers = 1\n")
	out := filepath.Join(dir, "run")
	run := start(t, nil, "", "run", cfg, "--out", out, "--set", "model.n_layer=2")
	sig := readSignal(t, out, run)
	u, err := url.Parse(sig.URL)
	if err != nil {
		t.Fatal(err)
	}
	// More sockets than the server's whole connection cap (1,024), held
	// open and never authenticated: the old server gave every slot away.
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < 4096 && lim.Max > lim.Cur {
		lim.Cur = min(lim.Max, 8192)
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []net.Conn
	attempts := 0
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: time.Second}
			for k := 0; k < 40; k++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := d.Dial("tcp", u.Host)
				mu.Lock()
				attempts++
				mu.Unlock()
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				// Ask for the websocket and never authenticate.
				fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", u.Path, u.Host)
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	}()
	time.Sleep(500 * time.Millisecond)
	peer := start(t, nil, "", "peer", "--signal", sig.URL, "--secret-file", sig.SecretFile, "--id", "by-hand", "--loopback")
	if err := run.wait(180 * time.Second); err != nil {
		t.Fatalf("run under the flood: %v\n%s\npeer:\n%s", err, run.stderr, peer.stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "summary.json")); err != nil {
		t.Fatal("no summary.json after the run")
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts < 1024 {
		t.Errorf("the flood tried only %d sockets, fewer than the server's cap", attempts)
	}
	t.Logf("the flood tried %d sockets from 127.0.0.2; the peer from 127.0.0.1 joined and the run finished", attempts)
}

// TestLedgerOfARun: a run's ledger verifies and names each key's share; a
// changed byte, or the last entry cut off, is refused; eval prints the
// ledger head, config and data hashes the checkpoint carries.
func TestLedgerOfARun(t *testing.T) {
	dir := t.TempDir()
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	cfg := writeFile(t, dir, "tiny.toml", strings.Replace(tinyTOML, "%s", strs, 1))
	out := filepath.Join(dir, "run")
	if code, _, stderr := narrowband(t, "run", cfg, "--out", out, "--set", "run.steps=3", "--set", "pipeline.stages=1"); code != 0 {
		t.Fatal(stderr)
	}
	code, stdout, stderr := narrowband(t, "ledger", "verify", out)
	if code != 0 || !strings.Contains(stdout, "4 entries verify") || !strings.Contains(stdout, "100.0%") {
		t.Fatalf("ledger verify: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = narrowband(t, "eval", "--checkpoint", filepath.Join(out, "checkpoint.safetensors"), "--text", filepath.Join(strs, "reader.go"))
	var ev map[string]any
	if code != 0 || json.Unmarshal([]byte(stdout), &ev) != nil || ev["ledger_head"] == nil || ev["config_sha256"] == nil || ev["data_sha256"] == nil || ev["code_version"] == nil {
		t.Fatalf("eval does not name the checkpoint's record: %s", stdout)
	}
	path := filepath.Join(out, "ledger.jsonl")
	orig, _ := os.ReadFile(path)
	for i := 0; i < len(orig); i += 97 {
		b := bytes.Clone(orig)
		b[i] ^= 0x01
		os.WriteFile(path, b, 0o644)
		if code, _, _ := narrowband(t, "ledger", "verify", out); code == 0 {
			t.Errorf("byte %d changed: the ledger still verifies", i)
		}
	}
	lines := bytes.SplitAfter(orig, []byte("\n"))
	os.WriteFile(path, bytes.Join(lines[:len(lines)-2], nil), 0o644)
	if code, _, stderr := narrowband(t, "ledger", "verify", out); code == 0 || !strings.Contains(stderr, "summary records") && !strings.Contains(stderr, "run recorded") {
		t.Errorf("the last entry cut off: exit %d\n%s", code, stderr)
	}
}
