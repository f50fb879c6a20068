//go:build !amd64 || purego

package kernels

// copyStepsArch has no vector version on this platform; copySteps copies
// in Go.
func copyStepsArch(d, src []float32, off, ld, kc, w int) bool { return false }

// interleave6Arch has no assembly version on this platform.
func interleave6Arch(d, src []float32, off, ld, kc int) bool { return false }

// interleave16Arch has no assembly version on this platform.
func interleave16Arch(d, src []float32, off, ld, kc int) int { return 0 }
