package rtc

import "testing"

// TestGCPercentLeavesHeadroom: a small live heap gets room of GCHeadroom,
// a large one Go's default proportional room, never less.
func TestGCPercentLeavesHeadroom(t *testing.T) {
	for _, live := range []uint64{1, 1 << 20, 5 << 20, 32 << 20, 63 << 20, 64 << 20, 300 << 20, 8 << 30} {
		pct := gcPercentFor(live)
		room := float64(live) * float64(pct) / 100
		if pct < 100 || pct > 10000 {
			t.Errorf("live %d B: GOGC %d, want within [100, 10000]", live, pct)
		}
		if pct < 10000 && room < GCHeadroom {
			t.Errorf("live %d B: GOGC %d leaves %.0f B of room, want at least %d", live, pct, room, GCHeadroom)
		}
		if pct > 100 && room > 1.1*GCHeadroom {
			t.Errorf("live %d B: GOGC %d leaves %.0f B of room, more than GCHeadroom needs", live, pct, room)
		}
	}
	if got := gcPercentFor(0); got != 100 {
		t.Errorf("before any collection: GOGC %d, want 100", got)
	}
}
