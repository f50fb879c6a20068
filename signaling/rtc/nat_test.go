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

	"github.com/narrowband/narrowband/signaling"
)

// The NAT tests build a small internet out of network namespaces:
//
//	ha (192.168.1.2) ─ na (NAT, 10.0.1.2) ─┐
//	                                        pub (10.0.1.1, 10.0.2.1): signaling + STUN/TURN
//	hb (192.168.2.2) ─ nb (NAT, 10.0.2.2) ─┘
//
// Peers a and b run as helper processes in ha and hb (a process's sockets
// stay in the namespace it started in; goroutines of one process do not).
// na and nb masquerade their LAN behind their WAN address with nftables, so
// neither peer is reachable except through the NAT mappings it opens.
// In the "blocked" variant pub drops forwarded traffic, so peer-to-peer
// paths through the NATs fail and the TURN relay in pub must carry the link.

const natServerIP = "10.0.1.1"

func TestNAT(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT test builds network namespaces; skipped in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("NAT test needs root to create network namespaces (ip netns)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("NAT test needs %q (apt-get install iproute2 nftables): %v", tool, err)
		}
	}
	for _, tc := range []struct {
		name    string
		blocked bool
	}{{"direct", false}, {"relay-only-path", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := buildNATNet(t, tc.blocked)
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
			typA, typB := strings.Fields(ca)[1], strings.Fields(cb)[1]
			relayed := typA == "relay" || typB == "relay"
			if tc.blocked && !relayed {
				t.Errorf("with direct paths blocked the link uses %s/%s, want a relay on one side", typA, typB)
			}
			if !tc.blocked && relayed {
				t.Errorf("behind two plain NATs the link uses %s/%s; want a direct path (no relay)", typA, typB)
			}
		})
	}
}

// buildNATNet creates the namespaces and returns their names by role.
func buildNATNet(t *testing.T, blocked bool) map[string]string {
	t.Helper()
	ns := map[string]string{}
	for _, role := range []string{"pub", "na", "nb", "ha", "hb"} {
		name := fmt.Sprintf("nb%d-%s", os.Getpid(), role)
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Skipf("cannot create network namespace %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		ns[role] = name
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	in := func(role string, args ...string) { run(append([]string{"ip", "netns", "exec", ns[role]}, args...)...) }
	nft := func(role, rules string) {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", ns[role], "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft in %s: %v: %s", role, err, out)
		}
	}
	for _, role := range []string{"pub", "na", "nb", "ha", "hb"} {
		in(role, "ip", "link", "set", "lo", "up")
	}
	for _, side := range []struct{ n, nat, host string }{{"1", "na", "ha"}, {"2", "nb", "hb"}} {
		wan := "10.0." + side.n
		lan := "192.168." + side.n
		run("ip", "-n", ns["pub"], "link", "add", "w"+side.n, "type", "veth", "peer", "name", "wan", "netns", ns[side.nat])
		run("ip", "-n", ns[side.nat], "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", ns[side.host])
		in("pub", "ip", "addr", "add", wan+".1/24", "dev", "w"+side.n)
		in("pub", "ip", "link", "set", "w"+side.n, "up")
		in(side.nat, "ip", "addr", "add", wan+".2/24", "dev", "wan")
		in(side.nat, "ip", "addr", "add", lan+".1/24", "dev", "lan")
		in(side.nat, "ip", "link", "set", "wan", "up")
		in(side.nat, "ip", "link", "set", "lan", "up")
		in(side.nat, "ip", "route", "add", "default", "via", wan+".1")
		in(side.nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		nft(side.nat, "table ip nat {\n chain post {\n type nat hook postrouting priority 100;\n oifname \"wan\" masquerade\n }\n}\n")
		// Like a home router's firewall, drop unsolicited packets to the
		// router itself. Dropped before conntrack confirms them, they leave
		// no entry behind that would make the NAT pick a new port for the
		// peer's own outgoing packet on the same tuple (which breaks hole
		// punching the way a symmetric NAT does).
		nft(side.nat, "table inet fw {\n chain in {\n type filter hook input priority 0;\n iifname \"wan\" ct state new drop\n }\n}\n")
		in(side.host, "ip", "addr", "add", lan+".2/24", "dev", "eth0")
		in(side.host, "ip", "link", "set", "eth0", "up")
		in(side.host, "ip", "route", "add", "default", "via", lan+".1")
	}
	in("pub", "sysctl", "-qw", "net.ipv4.ip_forward=1")
	if blocked {
		nft("pub", "table inet nbfilter {\n chain forward_drop {\n type filter hook forward priority 0; policy drop;\n }\n}\n")
	}
	return ns
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
