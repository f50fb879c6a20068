// Package fastblas is a gonum-style BLAS whose Sgemm is kernels.Sgemm, so
// code that takes a BLAS implementation — gorgonia.org/tensor's MatMul in
// particular — runs its float32 matrix products on the project's fast
// kernel:
//
//	tensor.Use(fastblas.Implementation{})
//
// Every other routine (and Dgemm) is gonum's own pure-Go implementation,
// embedded unchanged. It lives apart from package kernels so the kernels
// themselves depend on nothing but the standard library and x/sys.
package fastblas
