package compression

import "fmt"

// Basis is a fixed orthonormal basis U (D×K, row-major, columns orthonormal)
// of the subspace the residual stream is confined to. Every stage derives the
// same U from the run seed (NewBasis is bit-identical across platforms), so U
// itself never crosses the network.
type Basis struct {
	D, K int
	U    []float32 // D×K
}

// maxDim bounds model widths and vocabularies accepted here.
const maxDim = 1 << 24

// NewBasis draws a D×K Gaussian matrix from seed and orthonormalizes its
// columns by modified Gram-Schmidt (twice) in float64.
func NewBasis(seed uint64, d, k int) (*Basis, error) {
	if d < 1 || d > maxDim {
		return nil, fmt.Errorf("%w: subspace model width d = %d: want 1..%d", ErrConfig, d, maxDim)
	}
	if k < 1 || k > d {
		return nil, fmt.Errorf("%w: compression.rank (subspace k) = %d: want 1..d (%d)", ErrConfig, k, d)
	}
	g := newRNG(seed, "subspace-basis")
	col := make([]float64, d*k) // column-major, contiguous columns
	for i := range col {
		col[i] = g.normal()
	}
	orthonormalize64(col, d, k, 1e-10) // Gaussian columns: never near dependent
	u := make([]float32, d*k)
	for j := 0; j < k; j++ {
		for i := 0; i < d; i++ {
			u[i*k+j] = float32(col[j*d+i])
		}
	}
	return &Basis{D: d, K: k, U: u}, nil
}

// Embeddings returns the fixed random token-embedding table E0 (vocab×d,
// row-major), Gaussian with standard deviation std, derived from seed.
// Its rows are not in span(U): E0 carries the token identity outside the
// subspace, and the receiver adds E0[tok] back from the token id.
func Embeddings(seed uint64, vocab, d int, std float64) ([]float32, error) {
	if vocab < 1 || vocab > maxDim || d < 1 || d > maxDim || vocab > maxElems/d {
		return nil, fmt.Errorf("%w: subspace embeddings %d×%d: want 1 ≤ vocab·d ≤ 2^30", ErrConfig, vocab, d)
	}
	if !(std > 0 && std < 1e6) {
		return nil, fmt.Errorf("%w: subspace embedding std %v: want > 0", ErrConfig, std)
	}
	g := newRNG(seed, "subspace-e0")
	e := make([]float32, vocab*d)
	for i := range e {
		e[i] = float32(g.normal() * std)
	}
	return e, nil
}

// Coeffs sets c (rows×K) = x (rows×D) · U: the subspace coordinates of each
// row of x.
func (b *Basis) Coeffs(c, x []float32, rows int) {
	mulAB(c, x, b.U, rows, b.D, b.K)
}

// Expand sets x (rows×D) = c (rows×K) · Uᵀ.
func (b *Basis) Expand(x, c []float32, rows int) {
	mulABt(x, c, b.U, rows, b.D, b.K)
}

// ProjectRows projects every row of W (rows×D, e.g. a token or position
// embedding table whose rows are written into the residual stream) onto
// span(U): W ← W·U·Uᵀ.
func (b *Basis) ProjectRows(W []float32, rows, cols int) error {
	if cols != b.D {
		return fmt.Errorf("%w: ProjectRows: W has %d columns, basis width is %d", ErrShape, cols, b.D)
	}
	if err := checkShape(len(W), rows, cols); err != nil {
		return fmt.Errorf("ProjectRows: %w", err)
	}
	// T (rows×K) = W·U, then W = T·Uᵀ.
	t := make([]float32, rows*b.K)
	mulAB(t, W, b.U, rows, b.D, b.K)
	mulABt(W, t, b.U, rows, b.D, b.K)
	return nil
}

// ProjectCols projects every column of W (D×cols, e.g. an output projection
// y = W·x whose output rows index the residual stream, PyTorch Linear
// layout) onto span(U): W ← U·Uᵀ·W.
func (b *Basis) ProjectCols(W []float32, rows, cols int) error {
	if rows != b.D {
		return fmt.Errorf("%w: ProjectCols: W has %d rows, basis width is %d", ErrShape, rows, b.D)
	}
	if err := checkShape(len(W), rows, cols); err != nil {
		return fmt.Errorf("ProjectCols: %w", err)
	}
	// T (K×cols) = Uᵀ·W, then W = U·T.
	t := make([]float32, b.K*cols)
	mulAtB(t, b.U, W, b.D, b.K, cols)
	mulAB(W, b.U, t, b.D, b.K, cols)
	return nil
}

// ColCoeffs sets c (K×cols) = Uᵀ · x, x being D×cols: the subspace
// coordinates of each column of x (an output projection's gradient).
func (b *Basis) ColCoeffs(c, x []float32, cols int) {
	mulAtB(c, b.U, x, b.D, b.K, cols)
}

// ExpandCols sets x (D×cols) = U · c, c being K×cols.
func (b *Basis) ExpandCols(x, c []float32, cols int) {
	mulAB(x, b.U, c, b.D, b.K, cols)
}
