//go:build purego

package trainer

// portableKernels: this test binary's native peers use the portable Go
// kernels, the same code the wasm tab runs.
const portableKernels = true
