//go:build !purego

package trainer

// portableKernels: this test binary's native peers use the assembly
// kernels where the CPU has them; the wasm tab runs the portable ones.
const portableKernels = false
