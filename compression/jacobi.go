package compression

import "math"

// jacobiEigen diagonalizes the symmetric k×k matrix a (row-major, float64;
// overwritten) by cyclic Jacobi rotations and writes the eigenvectors into
// v as columns (v[i*k+j] = component i of vector j), sorted by eigenvalue,
// largest first, each signed so that its largest-magnitude component (the
// first such) is positive. It returns the eigenvalues in that order.
//
// Both ends of a transform-coded link run this on the same decoded data and
// must get the same bits: the sender's rotation is never sent. So it uses
// only IEEE-exact operations (+, −, ×, ÷, √), each product rounded by an
// explicit float64 conversion before it is added — the Go spec lets the
// compiler fuse x*y+z into one FMA (it does on arm64, ppc64, s390x and on
// amd64 with GOAMD64=v3), and a conversion is what forbids that — and a
// fixed visiting order and sweep limit, so no data-dependent early exit can
// differ between machines.
func jacobiEigen(a, v []float64, k int) []float64 {
	for i := range v {
		v[i] = 0
	}
	for i := 0; i < k; i++ {
		v[i*k+i] = 1
	}
	for sweep := 0; sweep < 30; sweep++ {
		var off, diag float64
		for p := 0; p < k; p++ {
			diag += float64(a[p*k+p] * a[p*k+p])
			for q := p + 1; q < k; q++ {
				off += float64(a[p*k+q] * a[p*k+q])
			}
		}
		// Off-diagonal mass below 1e-24 of the diagonal leaves every
		// eigenvector accurate to ~1e-12, far below fp16 or the step.
		if off <= diag*1e-24 || off == 0 {
			break
		}
		for p := 0; p < k-1; p++ {
			for q := p + 1; q < k; q++ {
				apq := a[p*k+q]
				if apq == 0 {
					continue
				}
				app, aqq := a[p*k+p], a[q*k+q]
				// Skip rotations that would not move the diagonal.
				if math.Abs(apq) <= 1e-14*math.Sqrt(math.Abs(float64(app*aqq))) {
					continue
				}
				theta := (aqq - app) / (2 * apq)
				t := 1 / (math.Abs(theta) + math.Sqrt(float64(theta*theta)+1))
				if theta < 0 {
					t = -t
				}
				c := 1 / math.Sqrt(float64(t*t)+1)
				s := float64(t * c)
				// Rotate rows/columns p and q of a: a ← Jᵀ a J.
				for r := 0; r < k; r++ {
					arp, arq := a[r*k+p], a[r*k+q]
					a[r*k+p] = float64(c*arp) - float64(s*arq)
					a[r*k+q] = float64(s*arp) + float64(c*arq)
				}
				for r := 0; r < k; r++ {
					apr, aqr := a[p*k+r], a[q*k+r]
					a[p*k+r] = float64(c*apr) - float64(s*aqr)
					a[q*k+r] = float64(s*apr) + float64(c*aqr)
				}
				for r := 0; r < k; r++ {
					vrp, vrq := v[r*k+p], v[r*k+q]
					v[r*k+p] = float64(c*vrp) - float64(s*vrq)
					v[r*k+q] = float64(s*vrp) + float64(c*vrq)
				}
			}
		}
	}
	// Sort by eigenvalue, largest first (selection sort: k is small, and
	// ties keep index order, so the result is fully determined).
	eig := make([]float64, k)
	for i := range eig {
		eig[i] = a[i*k+i]
	}
	for i := 0; i < k; i++ {
		best := i
		for j := i + 1; j < k; j++ {
			if eig[j] > eig[best] {
				best = j
			}
		}
		if best != i {
			eig[i], eig[best] = eig[best], eig[i]
			for r := 0; r < k; r++ {
				v[r*k+i], v[r*k+best] = v[r*k+best], v[r*k+i]
			}
		}
		big := 0
		for r := 1; r < k; r++ {
			if math.Abs(v[r*k+i]) > math.Abs(v[big*k+i]) {
				big = r
			}
		}
		if v[big*k+i] < 0 {
			for r := 0; r < k; r++ {
				v[r*k+i] = -v[r*k+i]
			}
		}
	}
	return eig
}
