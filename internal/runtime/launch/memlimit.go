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
// live data before collecting, so a GPT-2-small stage planned at 1.5 GB
// peaked at 2.7 GB: on a laptop that is the difference between training
// and swapping. The limit is the process's plan (engine.MemoryPlan.Process:
// the stage, a copy of its state, the runtime's overhead) plus 10%. It is
// a soft limit: the garbage collector works harder near it, it never
// fails an allocation. A GOMEMLIMIT the user set wins.
func limitMemory(cfg config.Config, layout scheduler.Layout, stage int) int64 {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return 0
	}
	plan, err := engine.PlanMemory(cfg, layout)
	if err != nil || stage < 0 || stage >= len(plan.Process) {
		return 0
	}
	limit := int64(1.1 * plan.Process[stage])
	debug.SetMemoryLimit(limit)
	return limit
}
