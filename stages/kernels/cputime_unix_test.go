//go:build unix

package kernels

import (
	"syscall"
	"time"
)

// processCPUTime is the user+system CPU time of this process so far. On a
// machine shared with other jobs, flops per CPU-second shows what the
// kernel does with the time it gets, where wall-clock GFLOP/s also
// measures the neighbours.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
