//go:build !unix

package kernels

import "time"

// processCPUTime is not measured here; benchmarks then omit the metric.
func processCPUTime() time.Duration { return 0 }
