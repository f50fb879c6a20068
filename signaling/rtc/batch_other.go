//go:build !linux && !js

package rtc

import "net"

// oobSize is unused where there is no offload.
var oobSize = 0

func enableOffload(*net.UDPConn) (gso, gro bool) { return false, false }

func gsoControl(buf []byte, _ int) []byte { return buf }

func groSegmentSize([]byte) int { return 0 }

func gsoRefused(error) bool { return false }
