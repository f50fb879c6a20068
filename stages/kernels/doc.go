// Package kernels holds the numeric kernels every stage's math runs on: one
// single-precision matrix multiply (Sgemm) that all matrix products in the
// model go through, so a faster implementation replaces the slow one in
// exactly one place.
//
// Everything is row-major on flat []float32 slices, in the BLAS argument
// order (outputs, inputs, dims) but without a column-major flip.
package kernels
