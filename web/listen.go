package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Listen opens the live view's socket on addr (HOST:PORT, e.g.
// "127.0.0.1:8080"; port 0 picks a free one) and returns it with the URL
// to open. If the port is taken (another run's view, say) or privileged,
// it listens on another port of the same host and logs a warning: the view
// is worth more on any port than the run is worth failing for.
//
// The URL names the address really listened on: the loopback or other IP
// bound, or for an unspecified host ("", "0.0.0.0", "::") this machine's
// host name (or, if that does not resolve to this machine, its first
// non-loopback address). A bind that is not loopback is logged as a
// warning, since whoever reaches it can read the run's config, data paths
// and peers; Handler only answers requests whose Host names this server
// (see Options.AllowedHosts), so a web page cannot read it by pointing its
// own domain at this address (DNS rebinding).
func Listen(addr string, log *slog.Logger) (net.Listener, string, error) {
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		host, _, splitErr := net.SplitHostPort(addr)
		// Only the port is the trouble when it is taken or privileged.
		if splitErr != nil || !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EACCES) {
			return nil, "", fmt.Errorf("web: listen on %q: %w (give HOST:PORT, e.g. \"127.0.0.1:8080\", or \"127.0.0.1:0\" for any free port)", addr, err)
		}
		ln2, err2 := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err2 != nil {
			return nil, "", fmt.Errorf("web: listen on %q: %w, and on another port: %v (pick a free port, or \"127.0.0.1:0\" for any)", addr, err, err2)
		}
		log.Warn("web: the port is taken; serving the live view on another port", "wanted", addr, "got", ln2.Addr().String(), "err", err)
		ln = ln2
	}
	tcp, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return ln, "http://" + ln.Addr().String() + "/", nil
	}
	port := strconv.Itoa(tcp.Port)
	switch {
	case tcp.IP.IsLoopback():
		return ln, "http://" + net.JoinHostPort(tcp.IP.String(), port) + "/", nil
	case tcp.IP.IsUnspecified():
		host := urlHost(tcp.IP.To4() != nil)
		log.Warn("web: the live view listens on every interface: anyone who can reach this machine can watch the run, its config, data paths and peers; set web.addr = \"127.0.0.1:0\" to keep it on this machine",
			"addr", ln.Addr().String(), "url_host", host)
		return ln, "http://" + net.JoinHostPort(host, port) + "/", nil
	default:
		log.Warn("web: the live view listens on a non-loopback address: anyone who can reach it can watch the run, its config, data paths and peers; set web.addr = \"127.0.0.1:0\" to keep it on this machine",
			"addr", ln.Addr().String())
		return ln, "http://" + net.JoinHostPort(tcp.IP.String(), port) + "/", nil
	}
}

// urlHost names this machine for a socket bound to every interface (only
// the IPv4 ones if v4only): its host name if that resolves to one of its
// addresses, else its first non-loopback address, else loopback.
func urlHost(v4only bool) string {
	local := localIPs()
	usable := func(ip net.IP) bool { return !v4only || ip.To4() != nil }
	if name, err := os.Hostname(); err == nil && name != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, name)
		cancel()
		if err == nil {
			for _, a := range addrs {
				if usable(a.IP) && (a.IP.IsLoopback() || containsIP(local, a.IP)) {
					return strings.ToLower(name)
				}
			}
		}
	}
	for _, ip := range local {
		if usable(ip) && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
			return ip.String()
		}
	}
	return "127.0.0.1"
}

// localIPs lists the addresses of this machine's interfaces that are up,
// IPv4 first.
func localIPs() []net.IP {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var v4, v6 []net.IP
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ip4 := ipn.IP.To4(); ip4 != nil {
				v4 = append(v4, ip4)
			} else {
				v6 = append(v6, ipn.IP)
			}
		}
	}
	return append(v4, v6...)
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}
