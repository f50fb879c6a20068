package launch

import (
	"os"
	"runtime/debug"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/scheduler"
)

// limitMemory holds a stage process to the memory plan the run printed
// before it started. Without a limit Go lets the heap grow to twice the
// live data before collecting (more under rtc.TuneGC's headroom), so a
// GPT-2-small stage planned at 1.5 GB peaked at 2.7 GB: on a laptop that
// is the difference between training and swapping. The limit is the
// stage's plan plus one copy of its state (weights and both moments, which
// a snapshot serializes) plus 10% and 128 MiB for the runtime, WebRTC's
// buffers and the sgemm packing buffers. It is a soft limit: the garbage
// collector works harder near it, it never fails an allocation. A
// GOMEMLIMIT the user set wins.
func limitMemory(cfg config.Config, layout scheduler.Layout, stage int) int64 {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return 0
	}
	plan, err := engine.PlanMemory(cfg, layout)
	if err != nil || stage < 0 || stage >= len(plan.Detail) {
		return 0
	}
	m := plan.Detail[stage]
	state := m.Params + m.AdamW // what a snapshot encodes, once more
	limit := int64(1.1*(m.Total()+state)) + 128<<20
	debug.SetMemoryLimit(limit)
	return limit
}
