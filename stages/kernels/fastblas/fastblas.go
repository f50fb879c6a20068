package fastblas

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/narrowband/narrowband/stages/kernels"
)

// Implementation is gonum's BLAS with Sgemm replaced by kernels.Sgemm. It
// satisfies blas.Float32, blas.Float64, blas.Complex64 and blas.Complex128,
// and so gorgonia.org/tensor's BLAS interface.
type Implementation struct {
	gonum.Implementation
}

// Sgemm computes C = alpha·op(A)·op(B) + beta·C on row-major matrices, as
// gonum's does, with kernels.Sgemm. For real matrices ConjTrans means
// Trans. A transpose value that is none of the three gets gonum's own
// panic, so misuse reads the same as with gonum.
func (impl Implementation) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	transA, okA := isTrans(tA)
	transB, okB := isTrans(tB)
	if !okA || !okB {
		impl.Implementation.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	kernels.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func isTrans(t blas.Transpose) (trans, ok bool) {
	switch t {
	case blas.NoTrans:
		return false, true
	case blas.Trans, blas.ConjTrans:
		return true, true
	}
	return false, false
}
