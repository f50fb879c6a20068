package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// threadsSetting is what SetThreads stored; 0 means runtime.GOMAXPROCS(0).
var threadsSetting atomic.Int64

// SetThreads sets how many threads (the caller plus n-1 pool workers) a
// large Sgemm may use; n ≤ 0 restores the default, runtime.GOMAXPROCS(0).
// Use SetThreads(1) to pin a stage's math to its own goroutine, e.g. when
// several stages share one machine. Results do not depend on it.
func SetThreads(n int) {
	threadsSetting.Store(int64(max(n, 0)))
}

// Threads reports how many threads a large Sgemm may use.
func Threads() int {
	if n := threadsSetting.Load(); n > 0 {
		return int(n)
	}
	return runtime.GOMAXPROCS(0)
}

// workers is the process-wide pool of goroutines that large Sgemm calls
// share. Its goroutines are started on the first call that needs them and
// then wait on their channels for the rest of the process: starting a
// goroutine per call would allocate and cost microseconds each time.
var workers pool

type pool struct {
	mu    sync.Mutex // one parallel Sgemm uses the pool at a time
	tasks []chan task
	wg    sync.WaitGroup
	buf   packBuf // the calling goroutine's packing space while it holds mu
	g     gemm    // the call in progress; held here so it is not allocated per call
}

// task is one rectangle of C for one worker.
type task struct {
	g              *gemm
	i0, i1, j0, j1 int
}

func (p *pool) worker(tasks <-chan task) {
	var buf packBuf
	for t := range tasks {
		t.g.run(&buf, t.i0, t.i1, t.j0, t.j1)
		p.wg.Done()
	}
}

// run splits C into threads rectangles on the kernel's tile grid, hands all
// but the first to workers and computes the first itself.
func (p *pool) run(call gemm, threads int) {
	mr, nr := call.kern.mr, call.kern.nr
	tilesM := (call.m + mr - 1) / mr
	tilesN := (call.n + nr - 1) / nr
	gm, gn := splitGrid(threads, tilesM, tilesN, mr, nr)
	if gm*gn == 1 {
		buf := bufPool.Get().(*packBuf)
		call.run(buf, 0, call.m, 0, call.n)
		bufPool.Put(buf)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.g = call
	g := &p.g
	defer func() { p.g = gemm{} }() // drop the caller's slices
	for len(p.tasks) < gm*gn-1 {
		ch := make(chan task, 1)
		p.tasks = append(p.tasks, ch)
		go p.worker(ch)
	}
	p.wg.Add(gm*gn - 1)
	w := 0
	var mine task
	for bi := 0; bi < gm; bi++ {
		i0, i1 := part(tilesM, gm, bi, mr, g.m)
		for bj := 0; bj < gn; bj++ {
			j0, j1 := part(tilesN, gn, bj, nr, g.n)
			t := task{g: g, i0: i0, i1: i1, j0: j0, j1: j1}
			if bi == 0 && bj == 0 {
				mine = t
				continue
			}
			p.tasks[w] <- t
			w++
		}
	}
	g.run(&p.buf, mine.i0, mine.i1, mine.j0, mine.j1)
	p.wg.Wait()
}

// splitGrid picks gm×gn ≤ threads rectangles (gm row bands, gn column
// bands) that minimise what each thread packs, rows+columns of its
// rectangle: every thread packs its own slices of A and B, so a square-ish
// split packs least.
func splitGrid(threads, tilesM, tilesN, mr, nr int) (gm, gn int) {
	gm, gn = 1, 1
	best := -1
	for m := 1; m <= min(threads, tilesM); m++ {
		n := min(threads/m, tilesN)
		if m*n < gm*gn {
			continue
		}
		cost := ((tilesM+m-1)/m)*mr + ((tilesN+n-1)/n)*nr
		if m*n > gm*gn || cost < best {
			gm, gn, best = m, n, cost
		}
	}
	return gm, gn
}

// part returns the element range of band i of parts bands over tiles
// tiles of size sz, clipped to total elements.
func part(tiles, parts, i, sz, total int) (lo, hi int) {
	lo = tiles * i / parts * sz
	hi = min(tiles*(i+1)/parts*sz, total)
	return lo, hi
}
