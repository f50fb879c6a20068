// Package data turns text on disk into training and held-out bytes and hands
// out seeded random windows of block_size+1 bytes.
//
// The default corpus is the Go standard library's own source, which every
// machine with Go has, so a run never downloads anything. The held-out split
// is by file (a hash of the path), so it never changes between runs, machines
// or stage counts. Batches are a pure function of (seed, step, micro-batch):
// resuming at step s needs no saved data-loader state and gives the same
// bytes an uninterrupted run would have seen.
package data
