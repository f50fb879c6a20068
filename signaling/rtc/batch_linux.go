package rtc

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"
	"unsafe"
)

// Linux UDP socket options (include/uapi/linux/udp.h); the syscall package
// does not name them.
const (
	solUDP     = syscall.IPPROTO_UDP
	udpSegment = 103 // UDP_SEGMENT: GSO segment size, per send or per socket
	udpGRO     = 104 // UDP_GRO: deliver coalesced datagrams with their size
)

// oobSize holds one control message carrying an int.
var oobSize = syscall.CmsgSpace(4)

// enableOffload turns on GRO for reads and probes whether sends may use
// GSO. Either may be missing (old kernels, gVisor); the socket then works
// datagram by datagram.
func enableOffload(udp *net.UDPConn) (gso, gro bool) {
	rc, err := udp.SyscallConn()
	if err != nil {
		return false, false
	}
	_ = rc.Control(func(fd uintptr) {
		_, err := syscall.GetsockoptInt(int(fd), solUDP, udpSegment)
		gso = err == nil
		gro = syscall.SetsockoptInt(int(fd), solUDP, udpGRO, 1) == nil
	})
	return gso, gro
}

// gsoControl writes into buf the control message that asks the kernel to
// cut a send into datagrams of size bytes.
func gsoControl(buf []byte, size int) []byte {
	buf = buf[:syscall.CmsgSpace(2)]
	clear(buf)
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&buf[0]))
	h.Level = solUDP
	h.Type = udpSegment
	h.SetLen(syscall.CmsgLen(2))
	binary.NativeEndian.PutUint16(buf[syscall.CmsgLen(0):], uint16(size))
	return buf
}

// groSegmentSize reads the size of the datagrams a GRO read was made of
// from its control messages; 0 if it was one datagram.
func groSegmentSize(oob []byte) int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == solUDP && m.Header.Type == udpGRO && len(m.Data) >= 4 {
			return int(binary.NativeEndian.Uint32(m.Data))
		}
	}
	return 0
}

// gsoRefused tells errors by which the kernel refuses segmentation offload
// on this path (e.g. a device without checksum offload) from other ones.
func gsoRefused(err error) bool {
	return errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EINVAL) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOPROTOOPT)
}
