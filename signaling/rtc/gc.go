package rtc

import (
	"os"
	"runtime/debug"
)

// PeerGCPercent is the garbage collector's target a peer process runs at
// (see TuneGC).
const PeerGCPercent = 400

// TuneGC sets this process's GC target to PeerGCPercent unless the user
// set GOGC. pion turns each message into ~9× its size of short-lived
// garbage (~600 KB per 64 KiB message: a copy per layer for each of the
// ~55 SCTP packets of 1191 bytes); at Go's default GOGC=100 and a peer's
// small live heap, the collector then runs every few MB sent and takes a
// third of the link's CPU. At 400 the heap may grow to 5× its live size
// between collections: for a training peer, whose live heap is mostly its
// stage's weights and optimizer moments, that is the price of 1.3–1.9×
// the data-channel throughput measured on a 2-vCPU machine (docs/peers.md).
func TuneGC() {
	if _, set := os.LookupEnv("GOGC"); set {
		return // the user's choice
	}
	debug.SetGCPercent(PeerGCPercent)
}
