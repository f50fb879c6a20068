package fastblas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gorgonia.org/tensor"

	"github.com/narrowband/narrowband/stages/kernels"
)

// TestSgemmMatchesGonum checks that every transpose value gives what
// gonum's BLAS gives, within float32 rounding for a length-k sum.
func TestSgemmMatchesGonum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const m, n, k = 37, 29, 300
	a := randSlice(rng, k*k) // big enough for either orientation
	b := randSlice(rng, k*k)
	for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans, blas.ConjTrans} {
		for _, tB := range []blas.Transpose{blas.NoTrans, blas.Trans, blas.ConjTrans} {
			t.Run(fmt.Sprintf("tA=%c/tB=%c", tA, tB), func(t *testing.T) {
				lda, ldb := k, n
				if tA != blas.NoTrans {
					lda = m
				}
				if tB != blas.NoTrans {
					ldb = k
				}
				got := randSlice(rng, m*n)
				want := append([]float32(nil), got...)
				Implementation{}.Sgemm(tA, tB, m, n, k, 0.5, a, lda, b, ldb, 2, got, n)
				Implementation{}.Implementation.Sgemm(tA, tB, m, n, k, 0.5, a, lda, b, ldb, 2, want, n)
				for i := range got {
					if d := math.Abs(float64(got[i] - want[i])); d > 1e-4 {
						t.Fatalf("C[%d] = %v, gonum %v", i, got[i], want[i])
					}
				}
			})
		}
	}
}

// TestSgemmBadTransposePanicsLikeGonum checks that misuse is reported,
// not computed.
func TestSgemmBadTransposePanicsLikeGonum(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("an invalid transpose value did not panic")
		}
	}()
	c := make([]float32, 4)
	Implementation{}.Sgemm(blas.Transpose('x'), blas.NoTrans, 2, 2, 2, 1, c, 2, c, 2, 0, c, 2)
}

// countingBLAS counts the Sgemm calls that reach it.
type countingBLAS struct {
	Implementation
	calls *int
}

func (c countingBLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cm []float32, ldc int) {
	*c.calls++
	c.Implementation.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, cm, ldc)
}

// TestTensorMatMulUsesIt checks that gorgonia's MatMul, after tensor.Use,
// goes through this Sgemm and gets the reference result.
func TestTensorMatMulUsesIt(t *testing.T) {
	old := tensor.WhichBLAS()
	calls := 0
	tensor.Use(countingBLAS{calls: &calls})
	defer tensor.Use(old)

	rng := rand.New(rand.NewPCG(3, 4))
	const m, n, k = 64, 48, 80
	av, bv := randSlice(rng, m*k), randSlice(rng, k*n)
	x := tensor.New(tensor.WithShape(m, k), tensor.WithBacking(av))
	y := tensor.New(tensor.WithShape(k, n), tensor.WithBacking(bv))
	z, err := tensor.MatMul(x, y)
	if err != nil {
		t.Fatalf("MatMul: %v", err)
	}
	if calls == 0 {
		t.Fatal("tensor.MatMul did not call the BLAS given to tensor.Use")
	}
	got := z.Data().([]float32)
	want := make([]float32, m*n)
	kernels.SgemmRef(false, false, m, n, k, 1, av, k, bv, n, 0, want, n)
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); d > 1e-4 {
			t.Fatalf("MatMul C[%d] = %v, reference %v", i, got[i], want[i])
		}
	}
}

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
	return s
}
