//go:build !js

package rtc

import (
	"fmt"
	"net"

	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
)

// bufferedNet is the network pion uses for sockets it opens itself (the
// server-reflexive sockets for STUN and the TURN client's): each gets the
// same large buffers as the host socket, since a link may end up on any
// of them.
type bufferedNet struct {
	*stdnet.Net
	size int
}

func newBufferedNet(size int) (*bufferedNet, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, fmt.Errorf("rtc: list network interfaces: %w", err)
	}
	return &bufferedNet{Net: n, size: size}, nil
}

type bufferSetter interface {
	SetReadBuffer(int) error
	SetWriteBuffer(int) error
}

func (n *bufferedNet) grow(c any) {
	if s, ok := c.(bufferSetter); ok {
		// Best effort: the kernel caps these at net.core.*mem_max.
		_ = s.SetReadBuffer(n.size)
		_ = s.SetWriteBuffer(n.size)
	}
}

func (n *bufferedNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		n.grow(c)
	}
	return c, err
}

func (n *bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err == nil {
		n.grow(c)
	}
	return c, err
}

func (n *bufferedNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.DialUDP(network, laddr, raddr)
	if err == nil {
		n.grow(c)
	}
	return c, err
}
