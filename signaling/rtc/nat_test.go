package rtc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/netns"
	"github.com/narrowband/narrowband/signaling"
)

// The NAT test builds the topology of internal/netns: peers a and b run as
// helper processes in ha and hb, each behind its own masquerading NAT, and
// signaling + STUN/TURN in pub. In the "blocked" variant pub forwards
// nothing between the NATs, so the TURN relay in pub must carry the link.
// (cmd/narrowband's TestNATTrain trains a model over the same topology.)

const natServerIP = netns.PublicIP

func TestNAT(t *testing.T) {
	netns.RequireRights(t)
	for _, tc := range []struct {
		name    string
		blocked bool
	}{{"direct", false}, {"relay-only-path", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netns.BuildNAT(t, tc.blocked)
			srv := startHelperIn(t, ns["pub"], "nat-server", nil)
			waitLine(t, srv, "READY", 10*time.Second)
			a := startHelperIn(t, ns["ha"], "nat-peer", []string{"NARROWBAND_NAT_ID=a", "NARROWBAND_NAT_REMOTE=b"})
			b := startHelperIn(t, ns["hb"], "nat-peer", []string{"NARROWBAND_NAT_ID=b", "NARROWBAND_NAT_REMOTE=a"})
			ca := waitLine(t, a, "CANDIDATE", 60*time.Second)
			cb := waitLine(t, b, "CANDIDATE", 60*time.Second)
			t.Logf("a: %s; b: %s", ca, cb)
			for _, h := range []*helper{a, b} {
				if err := h.wait(30 * time.Second); err != nil {
					t.Fatalf("peer %s: %v\n%s", h.name, err, h.stderr.String())
				}
			}
			// Both ends name the same pair's path.
			typA, typB := strings.Fields(ca)[1], strings.Fields(cb)[1]
			if typA != typB {
				t.Errorf("the two ends describe their link as %s and %s; want the same path kind", typA, typB)
			}
			if tc.blocked && typA != "relay" {
				t.Errorf("with direct paths blocked the link uses %s, want relay", typA)
			}
			if !tc.blocked && typA == "relay" {
				t.Errorf("behind two plain NATs the link uses a relay; want a direct path")
			}
		})
	}
}

type helper struct {
	name   string
	cmd    *exec.Cmd
	lines  chan string
	stderr *bytes.Buffer
	done   chan error
}

// startHelperIn runs this test binary in namespace ns as a helper.
func startHelperIn(t *testing.T, ns, mode string, env []string) *helper {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+mode, "NARROWBAND_NAT_SERVER="+natServerIP), env...)
	h := &helper{name: ns, cmd: cmd, lines: make(chan string, 16), stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = h.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		h.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-h.done
	})
	return h
}

func waitLine(t *testing.T, h *helper, prefix string, d time.Duration) string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				t.Fatalf("helper in %s exited before printing %s:\n%s", h.name, prefix, h.stderr.String())
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("helper in %s printed no %s line within %v:\n%s", h.name, prefix, d, h.stderr.String())
		}
	}
}

func (h *helper) wait(d time.Duration) error {
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(d):
		return fmt.Errorf("still running after %v", d)
	}
}

// runNATServer serves signaling on :8080 and STUN/TURN on :3478 of the
// pub namespace until killed.
func runNATServer() error {
	ip := os.Getenv("NARROWBAND_NAT_SERVER")
	ts, err := signaling.StartTURN(signaling.TURNConfig{ListenUDP: ip + ":3478", Key: testKey, Logger: quiet()})
	if err != nil {
		return err
	}
	defer ts.Close()
	s, err := signaling.NewServer(signaling.Config{Key: testKey, Logger: quiet()})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", ip+":8080")
	if err != nil {
		return err
	}
	fmt.Println("READY")
	return s.Serve(context.Background(), ln)
}

// runNATPeer connects to its remote through the pub server with STUN and
// TURN, exchanges 1 MiB each way and prints the path it used.
func runNATPeer() error {
	ip := os.Getenv("NARROWBAND_NAT_SERVER")
	id, remote := os.Getenv("NARROWBAND_NAT_ID"), os.Getenv("NARROWBAND_NAT_REMOTE")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sig, err := signaling.Dial(ctx, "ws://"+ip+":8080/run", id, testSecret)
	if err != nil {
		return err
	}
	defer sig.Close()
	cfg := DefaultConfig()
	cfg.Logger = quiet()
	if dir := os.Getenv("NARROWBAND_NAT_DEBUG"); dir != "" {
		// Debug aid: NARROWBAND_NAT_DEBUG=/tmp writes each peer's pion log there.
		f, err := os.Create(dir + "/nat-" + id + ".log")
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	user, pass := signaling.TURNCredentials(testKey, id)
	cfg.ICEServers = []ICEServer{
		{URLs: []string{"stun:" + ip + ":3478"}},
		{URLs: []string{"turn:" + ip + ":3478?transport=udp"}, Username: user, Credential: pass},
	}
	c, err := Connect(ctx, sig, remote, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := bytes.Repeat([]byte(id), 1<<19)
	if err := c.Send(ctx, msg); err != nil {
		return err
	}
	got, err := c.Recv(ctx)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, bytes.Repeat([]byte(remote), 1<<19)) {
		return fmt.Errorf("got %d bytes of the wrong content", len(got))
	}
	s := c.Stats()
	fmt.Printf("CANDIDATE %s RTT %v\n", s.Candidate, s.RTT)
	// a closes first (its Close waits until b has everything); b waits for
	// a's close marker so neither tears down under the other's last Recv.
	if id == "b" {
		if _, err := c.Recv(ctx); !errors.Is(err, io.EOF) {
			return fmt.Errorf("waiting for a's close: got %v, want io.EOF", err)
		}
	}
	return nil
}
