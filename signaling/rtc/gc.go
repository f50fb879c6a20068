package rtc

import (
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// GCHeadroom is the least room, in bytes of new allocation, a peer
// process's garbage collector leaves above the live heap before it runs
// again (see TuneGC).
const GCHeadroom = 64 << 20

// TuneGC gives this process's garbage collector at least GCHeadroom of
// room above the live heap, unless the user set GOGC. pion turns each
// message into ~9× its size of short-lived garbage (~600 KB per 64 KiB
// message: a copy per layer for each of the ~55 SCTP packets of 1191
// bytes). At Go's default GOGC=100 the room equals the live heap, so a
// process with a few MB live collects every few MB sent and the collector
// takes a third of the link's CPU. A fixed higher GOGC fixes that but
// multiplies a training peer's heap, which is hundreds of MB of weights,
// optimizer moments and activations: at GOGC=400 the quickstart's peers
// used 2.2–2.4× the memory of GOGC=100 and trained 0.81–0.92× as fast
// (experiments/peer-gc.sh). So the target follows the live heap: a small
// heap gets a high GOGC (GCHeadroom / live), a heap larger than
// GCHeadroom the default 100, and memory grows by at most GCHeadroom.
func TuneGC() {
	if _, set := os.LookupEnv("GOGC"); set {
		return // the user's choice
	}
	go func() {
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		last := 100
		for {
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 {
				if pct := gcPercentFor(sample[0].Value.Uint64()); pct != last {
					debug.SetGCPercent(pct)
					last = pct
				}
			}
			// The live heap changes on the scale of a run's set-up and
			// steps; twice a second follows it for a negligible cost.
			time.Sleep(500 * time.Millisecond)
		}
	}()
}

// gcPercentFor is the GOGC that leaves GCHeadroom above a live heap of
// live bytes: never below Go's default 100, capped at 10000 (a nearly
// empty heap), rounded to 5% steps so small changes of the live heap do not
// reset the target every time.
func gcPercentFor(live uint64) int {
	if live == 0 {
		return 100 // no collection yet: nothing to go by
	}
	pct := math.Ceil(float64(GCHeadroom)*100/float64(live)/5) * 5
	return int(max(100, min(10000, pct)))
}
