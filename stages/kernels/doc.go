// Package kernels holds the numeric kernels every stage's math runs on: one
// single-precision matrix multiply (Sgemm) that all matrix products in the
// model go through, so a faster implementation replaces the slow one in
// exactly one place.
//
// Everything is row-major on flat []float32 slices, in the BLAS argument
// order (outputs, inputs, dims) but without a column-major flip.
//
// # How Sgemm is built
//
// Sgemm follows Goto/BLIS: C is walked in blocks of nc columns and kc
// reduction steps; each kc×nc block of op(B) is packed into nr-wide panels,
// each mc×kc block of op(A) into mr-high panels, and a register-tile
// micro-kernel multiplies one A panel by one B panel into an mr×nr tile of
// C. The transpose flags are resolved while packing, so one micro-kernel
// serves all four variants; panels are zero-padded, and edge tiles of C go
// through a padded scratch tile, so the kernel never sees a partial tile.
// Block sizes (kc=256, mc=144, nc≈1024) keep a B panel in L1 and an A block
// in L2.
//
// Micro-kernels, chosen once at start-up from the CPU's features
// (golang.org/x/sys/cpu):
//
//   - amd64 with AVX2+FMA: a 6×16 Go-assembly kernel (12 ymm accumulators,
//     two B vectors, broadcasts of A), in two variants: A packed as
//     interleaved steps (used when A is transposed) or as six plain rows
//     (used when it is not, so packing a row-major A is a row copy rather
//     than a transposing one; BenchmarkALayout measured the rows layout
//     as fast or up to ~15% faster on the model's shapes, even against an
//     assembly transposing pack). In cache the kernel runs at ~85-95% of
//     the FMA peak (BenchmarkMicroKernel vs BenchmarkPeak); whole products
//     of the model's shapes at ~65-85% of it per CPU-second.
//   - arm64 (NEON is part of every ARMv8-A core): an 8×12 Go-assembly
//     kernel (24 q-register accumulators, LD1R broadcasts of A). It writes
//     raw sums to a scratch tile and Go applies alpha and beta, because Go's
//     arm64 assembler has no vector multiply. It is tested here under
//     qemu-aarch64 (correctness only; its speed has not been measured on
//     real arm64 hardware yet).
//   - everything else (386, wasm, amd64 without AVX2, or the purego build
//     tag): a portable 4×4 Go kernel, correct everywhere and some 25-30×
//     slower than the assembly one on amd64.
//
// There is no AVX-512 kernel yet: the machine this was developed on exposes
// only AVX2 to its guest (the notes in DESIGN.md were measured on a host
// that had AVX-512), and an assembly kernel that cannot be run here cannot
// be tested here. The 6×16 AVX2 kernel is the one to widen (e.g. 14×32 in
// zmm registers) once a machine with AVX-512 is available to test it.
//
// # Threads and determinism
//
// Products smaller than serialMACs multiply-adds (one attention head is
// 1 Mi) run on the calling goroutine with no hand-off at all. Larger ones
// run on the caller plus Threads()-1 goroutines of a persistent pool: for
// each kc×nc block of B the threads pack it together into one shared
// buffer, then take units of C (row bands × column ranges, on the kernel's
// tile grid) from a shared counter, each packing its own band of A, and
// meet at a barrier before the next block. Taking units dynamically keeps
// both cores busy on a shared machine where one thread gets descheduled.
// Packing buffers are kept by the pool and its threads, so steady state
// allocates nothing. The split is over C only, never over k, and every
// element of C is computed by the same sequence of operations whichever
// thread owns it, so results are bit-identical for any thread count and
// from run to run. SetThreads(1) pins a stage's math to its own goroutine.
// The pool's goroutines (kernels.(*pool).worker) start with the first large
// call and stay for the life of the process; goroutine-leak checks should
// ignore them.
//
// SgemmRef is the slow, obviously correct reference the tests compare with.
package kernels
