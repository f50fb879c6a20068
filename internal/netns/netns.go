// Package netns builds a small internet out of Linux network namespaces for
// tests that must cross real NATs: two hosts, each behind its own
// masquerading router, and a "public" namespace between the routers where
// signaling and STUN/TURN run.
//
//	ha (192.168.1.2) ─ na (NAT, 10.0.1.2) ─┐
//	                                        pub (10.0.1.1, 10.0.2.1)
//	hb (192.168.2.2) ─ nb (NAT, 10.0.2.2) ─┘
//
// A process's sockets stay in the namespace it started in (goroutines of one
// process do not), so each role runs as its own process, started through
// `ip netns exec` (see Command).
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// PublicIP is pub's address on ha's side; both hosts can reach it.
const PublicIP = "10.0.1.1"

// Net is one built topology: namespace names by role ("pub", "na", "nb",
// "ha", "hb").
type Net map[string]string

var serial atomic.Int32

// RequireRights skips t, saying why, where namespaces cannot be built: in
// -short mode, without root, or without ip and nft (apt-get install
// iproute2 nftables; .ci/run does).
func RequireRights(t testing.TB) {
	t.Helper()
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
}

// BuildNAT creates the namespaces (removed when t ends). na and nb
// masquerade their LAN behind their WAN address, so neither host is
// reachable except through the NAT mappings it opens. With blocked, pub
// forwards nothing between the routers: peer-to-peer paths fail and only a
// relay in pub can carry traffic between ha and hb.
func BuildNAT(t testing.TB, blocked bool) Net {
	t.Helper()
	ns := Net{}
	id := serial.Add(1)
	for _, role := range []string{"pub", "na", "nb", "ha", "hb"} {
		name := fmt.Sprintf("nb%d-%d-%s", os.Getpid(), id, role)
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

// Command returns a command that runs name with args inside role's
// namespace.
func (n Net) Command(role, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n[role], name}, args...)...)
}
