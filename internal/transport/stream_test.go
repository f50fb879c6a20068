package transport_test

import (
	"net"
	"testing"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/transport/transporttest"
)

// tcpPair connects two Streams over a real loopback TCP connection.
func tcpPair(t *testing.T) (a, b transport.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2 := <-ch
	if c2 == nil {
		t.Fatal("accept failed")
	}
	return transport.Stream(c1, "host"), transport.Stream(c2, "host")
}

func TestStreamConformance(t *testing.T) {
	transporttest.Run(t, tcpPair)
}
