package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/netns"
)

// TestNATTrain trains across NATs: `narrowband run` (signaling, STUN/TURN
// and the coordinator) in the public namespace, and two `narrowband peer`
// processes, each in its own home network behind its own masquerading NAT,
// joined with nothing but the command the run printed. Behind plain NATs
// the stage link goes peer to peer; with direct paths blocked it falls back
// to the run's TURN relay. Either way the losses are the in-process run's.
func TestNATTrain(t *testing.T) {
	netns.RequireRights(t)
	dir := t.TempDir()
	strs := filepath.Join(data.GoRoot(), "src", "strings")
	base := strings.Replace(strings.Replace(tinyTOML, "%s", strs, 1), "n_layer = 1", "n_layer = 2", 1) + "[pipeline]\nstages = 2\n"
	local := filepath.Join(dir, "local")
	if code, _, errOut := narrowband(t, "run", writeFile(t, dir, "local.toml", base), "--out", local); code != 0 {
		t.Fatalf("in-process run: exit %d\n%s", code, errOut)
	}
	want := runLosses(t, local)
	cfg := writeFile(t, dir, "nat.toml", base+`transport = "webrtc"
local_peers = 0
loopback = false
signal_addr = "`+netns.PublicIP+`:8080"
turn_addr = "`+netns.PublicIP+`:3478"
`)
	for _, tc := range []struct {
		name    string
		blocked bool
	}{{"direct", false}, {"relay-only-path", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netns.BuildNAT(t, tc.blocked)
			out := filepath.Join(dir, tc.name)
			run := start(t, ns, "pub", "run", cfg, "--out", out)
			join := readSignal(t, out, run).Join
			if !strings.Contains(join, "--ice turn:"+netns.PublicIP+":3478") {
				t.Fatalf("the join command %q does not name the run's TURN server", join)
			}
			args := strings.Fields(join)[1:] // "narrowband" is this test binary
			peers := []*proc{start(t, ns, "ha", append(args, "--id", "home-a")...), start(t, ns, "hb", append(args, "--id", "home-b")...)}
			if err := run.wait(120 * time.Second); err != nil {
				t.Fatalf("run across NATs: %v\n%s\npeer a:\n%s\npeer b:\n%s", err, run.stderr, peers[0].stderr, peers[1].stderr)
			}
			for _, p := range peers {
				if err := p.wait(30 * time.Second); err != nil {
					t.Errorf("peer in %s: %v\n%s", p.role, err, p.stderr)
				}
			}
			got := runLosses(t, out)
			if len(got) != len(want) {
				t.Fatalf("%d losses across NATs, %d in process", len(got), len(want))
			}
			for i := range want {
				if d := math.Abs(got[i]-want[i]) / math.Abs(want[i]); d > 1e-5 {
					t.Errorf("loss value %d: across NATs %v, in process %v", i, got[i], want[i])
				}
			}
			recs, err := metrics.ReadJSONL(filepath.Join(out, "metrics.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			last := recs[len(recs)-1]
			if len(last.Links) != 1 {
				t.Fatalf("last step reports %d links, want 1", len(last.Links))
			}
			path := last.Links[0].Candidate
			t.Logf("stage link path: %s (RTT %.2f ms)", path, last.Links[0].RTTMillis)
			if tc.blocked && path != "relay" {
				t.Errorf("with direct paths blocked the stage link used %q, want relay", path)
			}
			if !tc.blocked && (path == "relay" || path == "") {
				t.Errorf("behind two plain NATs the stage link used %q, want a direct path (srflx or prflx)", path)
			}
		})
	}
}

// runLosses reads every training and held-out loss of the run in dir.
func runLosses(t *testing.T, dir string) []float64 {
	t.Helper()
	out, err := metrics.Losses(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// proc is this binary running a narrowband command in a child process.
type proc struct {
	role   string
	cmd    *exec.Cmd
	stderr *strings.Builder
	done   chan error
}

// start runs `narrowband args...` in role's namespace of ns, or here if ns
// is nil; the process is killed when t ends.
func start(t *testing.T, ns netns.Net, role string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	if ns != nil {
		cmd = ns.Command(role, os.Args[0], args...)
	}
	cmd.Env = append(os.Environ(), "NARROWBAND_MAIN=1")
	p := &proc{role: role, cmd: cmd, stderr: &strings.Builder{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		p.wait(10 * time.Second)
	})
	return p
}

var errStillRunning = errors.New("still running")

// wait returns the process's exit error, or errStillRunning after d.
func (p *proc) wait(d time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err // for a later wait or the cleanup
		return err
	case <-time.After(d):
		return fmt.Errorf("%w after %v", errStillRunning, d)
	}
}

// signalFile is what a WebRTC run writes to <out>/signal.json.
type signalFile struct {
	URL        string `json:"url"`
	SecretFile string `json:"secret_file"`
	Join       string `json:"join"`
}

// readSignal waits for the run to write signal.json.
func readSignal(t *testing.T, out string, run *proc) signalFile {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var sig signalFile
		b, err := os.ReadFile(filepath.Join(out, "signal.json"))
		if err == nil && json.Unmarshal(b, &sig) == nil && sig.Join != "" {
			return sig
		}
		if err := run.wait(50 * time.Millisecond); !errors.Is(err, errStillRunning) {
			t.Fatalf("the run ended (%v) before writing signal.json:\n%s", err, run.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run never wrote signal.json:\n%s", run.stderr)
		}
	}
}
