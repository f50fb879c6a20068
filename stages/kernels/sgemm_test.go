package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"
)

// kernelsUnderTest are the micro-kernels this machine can run: the portable
// Go one always, the assembly one when the CPU has it, and, if that has a
// rows variant, the assembly one without it, so the interleaved packing of a
// row-major A (which Sgemm does not choose here) stays tested too.
func kernelsUnderTest() []*microKernel {
	ks := []*microKernel{goKernel}
	if asmKernel != nil {
		ks = append(ks, asmKernel)
		if asmKernel.rows != nil {
			k := *asmKernel
			k.name += "-interleaved"
			k.rows = nil
			ks = append(ks, &k)
		}
	}
	return ks
}

// useKernel makes Sgemm use k until the test ends.
func useKernel(t testing.TB, k *microKernel) {
	old := active
	active = k
	t.Cleanup(func() { active = old })
}

// useThreads sets the thread count until the test ends.
func useThreads(t testing.TB, n int) {
	old := threadsSetting.Load()
	SetThreads(n)
	t.Cleanup(func() { threadsSetting.Store(old) })
}

// operands is one Sgemm problem with stored matrices padded to their
// leading dimensions, so tests see strides wider than the rows.
type operands struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
}

const guard = float32(-12345.5) // value of the ld padding in C, which must survive

func newOperands(rng *rand.Rand, transA, transB bool, m, n, k, pad int, alpha, beta float32) *operands {
	o := &operands{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta}
	aRows, aCols := m, k
	if transA {
		aRows, aCols = k, m
	}
	bRows, bCols := k, n
	if transB {
		bRows, bCols = n, k
	}
	o.lda, o.ldb, o.ldc = max(1, aCols)+pad, max(1, bCols)+pad, max(1, n)+pad
	o.a = randMatrix(rng, aRows, o.lda)
	o.b = randMatrix(rng, bRows, o.ldb)
	o.c = randMatrix(rng, m, o.ldc)
	for i := 0; i < m; i++ {
		for j := n; j < o.ldc; j++ {
			o.c[i*o.ldc+j] = guard
		}
		if beta == 0 {
			// beta = 0 must overwrite C without reading it.
			for j := 0; j < n; j++ {
				o.c[i*o.ldc+j] = float32(math.NaN())
			}
		}
	}
	return o
}

func randMatrix(rng *rand.Rand, rows, ld int) []float32 {
	s := make([]float32, rows*ld)
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
	return s
}

func (o *operands) run(c []float32, f func(bool, bool, int, int, int, float32, []float32, int, []float32, int, float32, []float32, int)) {
	f(o.transA, o.transB, o.m, o.n, o.k, o.alpha, o.a, o.lda, o.b, o.ldb, o.beta, c, o.ldc)
}

// check runs Sgemm and SgemmRef on copies of C and fails if any element
// differs by more than the classic forward-error bound of a length-k dot
// product in float32, 2·k·ε·(|α|·Σ|a||b| + |β|·|c|), or if Sgemm touched the
// ld padding of C.
func (o *operands) check(t *testing.T) {
	t.Helper()
	got := append([]float32(nil), o.c...)
	want := append([]float32(nil), o.c...)
	o.run(got, Sgemm)
	o.run(want, SgemmRef)
	// Σ|a||b| per element, from the reference on absolute values.
	abs := func(s []float32) []float32 {
		r := make([]float32, len(s))
		for i, v := range s {
			r[i] = float32(math.Abs(float64(v)))
		}
		return r
	}
	mag := make([]float32, len(o.c))
	if o.m > 0 && o.n > 0 {
		SgemmRef(o.transA, o.transB, o.m, o.n, o.k, 1, abs(o.a), o.lda, abs(o.b), o.ldb, 0, mag, o.ldc)
	}
	const eps = 1.0 / (1 << 24)
	bad := 0
	for i := 0; i < o.m; i++ {
		for j := 0; j < o.ldc; j++ {
			x := i*o.ldc + j
			if j >= o.n {
				if got[x] != guard {
					t.Fatalf("Sgemm wrote C[%d][%d]=%v in the ld padding (outside the %d×%d result)", i, j, got[x], o.m, o.n)
				}
				continue
			}
			cmag := 0.0
			if o.beta != 0 {
				cmag = math.Abs(float64(o.beta) * float64(o.c[x]))
			}
			tol := 2*float64(o.k+2)*eps*(math.Abs(float64(o.alpha))*float64(mag[x])+cmag) + 1e-30
			diff := math.Abs(float64(got[x]) - float64(want[x]))
			if !(diff <= tol) { // also catches NaN
				if bad < 5 {
					t.Errorf("C[%d][%d] = %v, reference %v (|diff| %.3g > tol %.3g)", i, j, got[x], want[x], diff, tol)
				}
				bad++
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d elements out of tolerance", bad, o.m*o.n)
	}
}

func transName(transA, transB bool) string {
	s := [2]byte{'N', 'N'}
	if transA {
		s[0] = 'T'
	}
	if transB {
		s[1] = 'T'
	}
	return string(s[:])
}

// TestSgemmMatchesRef compares every kernel, all four transpose variants and
// both thread modes with the reference on awkward shapes: ones, primes, sizes
// off the tile grid, k across several cache blocks, m and n across several
// blocks, strides wider than the rows, and α, β in {0, 1, other}.
func TestSgemmMatchesRef(t *testing.T) {
	shapes := []struct{ m, n, k int }{
		{1, 1, 1}, {1, 17, 3}, {5, 1, 7}, {6, 16, 8}, {7, 13, 5}, {13, 31, 257},
		{37, 41, 43}, {4, 4, 1}, {150, 35, 513}, {299, 1037, 11}, {64, 64, 64},
		{3, 2, 0}, {0, 5, 3}, {5, 0, 3},
	}
	scalars := []struct{ alpha, beta float32 }{
		{1, 0}, {1, 1}, {-0.5, 0}, {0.75, -2}, {0, 0.5}, {0, 0}, {1.5, 1},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, kern := range kernelsUnderTest() {
		for _, threads := range []int{1, 3} {
			t.Run(fmt.Sprintf("kernel=%s/threads=%d", kern.name, threads), func(t *testing.T) {
				useKernel(t, kern)
				useThreads(t, threads)
				for _, s := range shapes {
					for tr := 0; tr < 4; tr++ {
						for si, sc := range scalars {
							pad := (si * 3) % 4
							o := newOperands(rng, tr&1 != 0, tr&2 != 0, s.m, s.n, s.k, pad, sc.alpha, sc.beta)
							name := fmt.Sprintf("m=%d/n=%d/k=%d/trans=%s/alpha=%g/beta=%g/pad=%d", s.m, s.n, s.k, transName(o.transA, o.transB), sc.alpha, sc.beta, pad)
							t.Run(name, o.check)
						}
					}
				}
			})
		}
	}
}

// TestSgemmModelShapesMatchRef checks the shapes the model runs, with an
// eighth of the batch (and of dW's reduction) so the slow reference stays
// quick.
func TestSgemmModelShapesMatchRef(t *testing.T) {
	if testing.Short() {
		t.Skip("reference on model shapes takes a few seconds")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []struct {
		m, n, k        int
		transA, transB bool
	}{
		{256, 768, 256, false, true},  // forward qkv, y = x·Wᵀ
		{256, 256, 1024, false, true}, // forward MLP down
		{256, 256, 768, false, false}, // dX = dY·W
		{768, 256, 256, true, false},  // dW = dYᵀ·X
		{128, 128, 64, false, true},   // attention scores
		{128, 64, 128, true, true},
	}
	for _, kern := range kernelsUnderTest() {
		useKernel(t, kern)
		for _, c := range cases {
			o := newOperands(rng, c.transA, c.transB, c.m, c.n, c.k, 0, 1, 0)
			t.Run(fmt.Sprintf("kernel=%s/m=%d/n=%d/k=%d/trans=%s", kern.name, c.m, c.n, c.k, transName(c.transA, c.transB)), o.check)
		}
	}
}

// TestSgemmDeterministicAcrossThreads checks that the thread count never
// changes a single bit of the result, for shapes split over rows and over
// columns and with edge tiles.
func TestSgemmDeterministicAcrossThreads(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	shapes := []struct {
		m, n, k        int
		transA, transB bool
	}{
		{301, 257, 300, false, true}, // split over rows
		{40, 1100, 530, true, false}, // split over columns
		{203, 203, 203, true, true},
	}
	for _, kern := range kernelsUnderTest() {
		useKernel(t, kern)
		for _, s := range shapes {
			o := newOperands(rng, s.transA, s.transB, s.m, s.n, s.k, 1, 0.5, 1)
			if s.m*s.n*s.k < serialMACs {
				t.Fatalf("shape %v is below the parallel threshold; the test would prove nothing", s)
			}
			var first []float32
			for _, threads := range []int{1, 2, 3, 4, 7} {
				useThreads(t, threads)
				got := append([]float32(nil), o.c...)
				o.run(got, Sgemm)
				if first == nil {
					first = got
					continue
				}
				for x := range got {
					if math.Float32bits(got[x]) != math.Float32bits(first[x]) {
						t.Fatalf("kernel=%s %dx%dx%d: threads=%d gives C[%d]=%v, threads=1 gives %v", kern.name, s.m, s.n, s.k, threads, x, got[x], first[x])
					}
				}
			}
		}
	}
}

// TestSgemmNoAllocs checks that steady-state calls allocate nothing, on the
// calling goroutine (small) and on the worker pool (large).
func TestSgemmNoAllocs(t *testing.T) {
	useThreads(t, 2)
	rng := rand.New(rand.NewPCG(7, 8))
	for _, s := range []struct{ m, n, k int }{{128, 128, 64}, {512, 256, 256}} {
		o := newOperands(rng, false, true, s.m, s.n, s.k, 0, 1, 0)
		allocs := testing.AllocsPerRun(10, func() { o.run(o.c, Sgemm) })
		if allocs != 0 {
			t.Errorf("%dx%dx%d: %v allocations per call, want 0", s.m, s.n, s.k, allocs)
		}
	}
}

// TestSgemmRejectsBadArguments checks that inconsistent arguments stop
// with a message naming the argument, rather than computing garbage.
func TestSgemmRejectsBadArguments(t *testing.T) {
	a := make([]float32, 12)
	cases := []struct {
		name, want string
		call       func()
	}{
		{"negative m", "negative dimension", func() { Sgemm(false, false, -1, 2, 2, 1, a, 2, a, 2, 0, a, 2) }},
		{"short a", "len(a)=12", func() { Sgemm(false, false, 4, 2, 4, 1, a, 4, a, 2, 0, a, 2) }},
		{"short c", "len(c)=3", func() { Sgemm(false, false, 2, 2, 2, 1, a, 2, a, 2, 0, a[:3], 2) }},
		{"narrow ldb", "ldb=1", func() { Sgemm(false, true, 2, 2, 2, 1, a, 2, a, 1, 0, a, 2) }},
	}
	if err := CheckSgemm(false, true, 2, 3, 4, a, 4, a[:11], 4, a, 3); err == nil || !strings.Contains(err.Error(), "len(b)=11") {
		t.Errorf("CheckSgemm with a short b: %v, want an error naming len(b)=11", err)
	}
	if err := CheckSgemm(false, true, 2, 3, 4, a, 4, a, 4, a, 3); err != nil {
		t.Errorf("CheckSgemm with consistent arguments: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatalf("no panic")
				}
				if msg := fmt.Sprint(r); !strings.Contains(msg, c.want) {
					t.Fatalf("panic %q does not mention %q", msg, c.want)
				}
			}()
			c.call()
		})
	}
}

// FuzzSgemm compares Sgemm with the reference on arbitrary small shapes,
// strides, transposes and scalars.
func FuzzSgemm(f *testing.F) {
	f.Add(uint8(7), uint8(13), uint8(5), uint8(0), uint8(3), float32(1), float32(0), uint64(1))
	f.Add(uint8(1), uint8(1), uint8(1), uint8(3), uint8(0), float32(-2), float32(1), uint64(2))
	f.Add(uint8(33), uint8(17), uint8(64), uint8(1), uint8(1), float32(0.5), float32(0.25), uint64(3))
	f.Add(uint8(6), uint8(16), uint8(255), uint8(2), uint8(2), float32(1), float32(1), uint64(4))
	f.Fuzz(func(t *testing.T, m, n, k, trans, pad uint8, alpha, beta float32, seed uint64) {
		if math.IsNaN(float64(alpha)) || math.IsInf(float64(alpha), 0) || math.Abs(float64(alpha)) > 1e6 ||
			math.IsNaN(float64(beta)) || math.IsInf(float64(beta), 0) || math.Abs(float64(beta)) > 1e6 {
			t.Skip("scalars outside the range where a tolerance means anything")
		}
		rng := rand.New(rand.NewPCG(seed, 9))
		for _, kern := range kernelsUnderTest() {
			useKernel(t, kern)
			o := newOperands(rng, trans&1 != 0, trans&2 != 0, int(m%80), int(n%80), int(k), int(pad%5), alpha, beta)
			o.check(t)
		}
	})
}

// TestSgemmConcurrentCallers checks that Sgemm calls from several
// goroutines at once (stages sharing a process) give exactly the results of
// the same calls made one at a time.
func TestSgemmConcurrentCallers(t *testing.T) {
	useThreads(t, 2)
	rng := rand.New(rand.NewPCG(11, 12))
	shapes := []struct{ m, n, k int }{{300, 200, 100}, {128, 128, 64}, {97, 530, 260}, {64, 64, 2000}}
	var ops []*operands
	var want [][]float32
	for i := 0; i < 8; i++ {
		s := shapes[i%len(shapes)]
		o := newOperands(rng, i%2 == 0, i%3 == 0, s.m, s.n, s.k, i%2, 1, 0.5)
		w := append([]float32(nil), o.c...)
		o.run(w, Sgemm)
		ops, want = append(ops, o), append(want, w)
	}
	got := make([][]float32, len(ops))
	done := make(chan int)
	for i, o := range ops {
		go func() {
			c := append([]float32(nil), o.c...)
			for range 3 {
				copy(c, o.c)
				o.run(c, Sgemm)
			}
			got[i] = c
			done <- i
		}()
	}
	for range ops {
		<-done
	}
	for i := range ops {
		for x := range got[i] {
			if math.Float32bits(got[i][x]) != math.Float32bits(want[i][x]) {
				t.Fatalf("call %d: concurrent C[%d]=%v, alone %v", i, x, got[i][x], want[i][x])
			}
		}
	}
}

// TestGrowAligns checks that packing buffers start on a cache line, which
// the AVX2 kernel's B loads rely on for speed (not correctness).
func TestGrowAligns(t *testing.T) {
	for _, n := range []int{1, 7, 96, 1000, 40000} {
		s := grow(nil, n)
		if len(s) != n {
			t.Fatalf("grow(nil, %d) has length %d", n, len(s))
		}
		if addr := uintptr(unsafe.Pointer(&s[0])); addr%64 != 0 {
			t.Errorf("grow(nil, %d) starts at %#x, not on a 64-byte boundary", n, addr)
		}
	}
}
