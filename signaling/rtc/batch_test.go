package rtc

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

func listenLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = u.SetReadBuffer(4 << 20)
	_ = u.SetWriteBuffer(4 << 20)
	return u
}

// datagrams is a burst like SCTP's: runs of full-size packets, short
// tails, tiny control packets in between.
func datagrams() [][]byte {
	var out [][]byte
	sizes := []int{1220, 1220, 1220, 700, 1220, 1220, 60, 60, 1220}
	for i := 0; i < 200; i++ {
		sizes = append(sizes, 1220)
	}
	sizes = append(sizes, 33, 1, 1500, 1500, 9000)
	for i, n := range sizes {
		out = append(out, bytes.Repeat([]byte{byte(i)}, n))
	}
	return out
}

type addrPortReader interface {
	ReadFromAddrPort(b []byte) (int, netip.AddrPort, error)
}

type plainReader struct{ *net.UDPConn }

func (p plainReader) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return p.ReadFromUDPAddrPort(b)
}

// TestBatchConnKeepsDatagrams: whatever the sender and receiver (batching
// or plain), the receiver gets the same datagrams in the same order, so the
// wire format is untouched and a peer without offload interoperates.
func TestBatchConnKeepsDatagrams(t *testing.T) {
	for _, tc := range []struct{ batchSend, batchRecv bool }{
		{true, true}, {true, false}, {false, true},
	} {
		t.Run(fmt.Sprintf("send=%v/recv=%v", tc.batchSend, tc.batchRecv), func(t *testing.T) {
			su, ru := listenLoopback(t), listenLoopback(t)
			send, recv := newBatchConn(su, tc.batchSend), newBatchConn(ru, tc.batchRecv)
			defer send.Close()
			defer recv.Close()
			var r addrPortReader = recv
			if !tc.batchRecv {
				r = plainReader{ru}
			}
			to := ru.LocalAddr().(*net.UDPAddr).AddrPort()
			want := datagrams()
			go func() {
				for _, d := range want {
					if _, err := send.WriteToAddrPort(d, to); err != nil {
						t.Errorf("write: %v", err)
						return
					}
				}
			}()
			_ = ru.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 16<<10)
			for i, w := range want {
				n, from, err := r.ReadFromAddrPort(buf)
				if err != nil {
					t.Fatalf("datagram %d of %d: %v", i, len(want), err)
				}
				if from.Port() != su.LocalAddr().(*net.UDPAddr).AddrPort().Port() {
					t.Fatalf("datagram %d from %v", i, from)
				}
				if !bytes.Equal(buf[:n], w) {
					t.Fatalf("datagram %d: got %d bytes starting %d, want %d bytes of %d", i, n, buf[0], len(w), w[0])
				}
			}
			if runtime.GOOS == "linux" && tc.batchSend {
				packets, sends := send.stats.packets.Load(), send.stats.sends.Load()
				t.Logf("sender: %d datagrams in %d sends", packets, sends)
				if sends >= packets {
					t.Errorf("no batching: %d datagrams took %d sends", packets, sends)
				}
			}
		})
	}
}

// TestBatchConnClose: Close sends what is queued, then later writes fail.
func TestBatchConnClose(t *testing.T) {
	su, ru := listenLoopback(t), listenLoopback(t)
	defer ru.Close()
	send := newBatchConn(su, true)
	to := ru.LocalAddr().(*net.UDPAddr).AddrPort()
	for i := 0; i < 50; i++ {
		if _, err := send.WriteToAddrPort(make([]byte, 1000), to); err != nil {
			t.Fatal(err)
		}
	}
	if err := send.Close(); err != nil {
		t.Fatal(err)
	}
	_ = ru.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	for i := 0; i < 50; i++ {
		if n, _, err := ru.ReadFromUDPAddrPort(buf); err != nil || n != 1000 {
			t.Fatalf("datagram %d after Close: %d bytes, %v", i, n, err)
		}
	}
	if _, err := send.WriteToAddrPort([]byte("late"), to); err == nil {
		t.Error("write after Close succeeded")
	}
	if err := send.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestBatchConnOversized: a datagram longer than the reader's buffer is cut
// and the next one still arrives, as with a plain socket (pion's mux stops
// for good on a read error, so a hostile datagram must not cause one).
func TestBatchConnOversized(t *testing.T) {
	su, ru := listenLoopback(t), listenLoopback(t)
	defer su.Close()
	recv := newBatchConn(ru, true)
	defer recv.Close()
	to := ru.LocalAddr().(*net.UDPAddr).AddrPort()
	for _, n := range []int{3000, 10} {
		if _, err := su.WriteToUDPAddrPort(bytes.Repeat([]byte{byte(n)}, n), to); err != nil {
			t.Fatal(err)
		}
	}
	_ = ru.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for _, want := range []int{1500, 10} {
		n, _, err := recv.ReadFromAddrPort(buf)
		if err != nil || n != want {
			t.Fatalf("read: %d bytes, %v; want %d bytes and no error", n, err, want)
		}
	}
}
