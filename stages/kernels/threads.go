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

// ThreadsSetting is what SetThreads last set (0: every core), to restore it.
func ThreadsSetting() int { return int(threadsSetting.Load()) }

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

// pool runs one parallel Sgemm at a time, BLIS-style: for each kc×nc block
// of op(B), the threads first pack it together into one shared buffer,
// then take units of C (a band of rows × a range of column panels) from a
// shared counter, each packing its own A band. Taking units dynamically,
// rather than fixing a rectangle per thread, keeps both cores busy when the
// machine is shared and one thread is descheduled; packing B once, rather
// than once per thread, halves the packing of the forward pass's Wᵀ.
//
// Which thread computes a unit never changes its arithmetic: units start on
// the kernel's tile grid and every unit of a kc block is finished before
// the next kc block starts, so results stay bit-identical for any thread
// count.
type pool struct {
	mu      sync.Mutex // one parallel Sgemm uses the pool at a time
	tasks   []chan struct{}
	started int // workers running
	done    sync.WaitGroup
	bar     barrier
	buf     packBuf   // the calling goroutine's packing space
	bufs    []packBuf // the workers' packing space, one each
	pb      []float32 // the shared packed B block

	// The call in progress, held here so it is not allocated per call.
	g       gemm
	mc      int // rows per unit: a multiple of mr, at most blockM
	jrChunk int // columns per unit: a multiple of nr
	claimB  atomic.Int64
	claimU  atomic.Int64
}

func (p *pool) worker(i int, wake <-chan struct{}) {
	for range wake {
		p.work(&p.bufs[i])
		p.done.Done()
	}
}

// run computes the whole of C with threads threads: the caller and
// threads-1 pool workers. If another call holds the pool, the cores are
// already busy with it, so this one runs on the calling goroutine instead
// of waiting idle (same bits either way).
func (p *pool) run(call gemm, threads int) {
	if !p.mu.TryLock() {
		buf := bufPool.Get()
		call.run(buf, 0, call.m, 0, call.n)
		bufPool.Put(buf)
		return
	}
	defer p.mu.Unlock()
	defer func() { p.g = gemm{} }() // drop the caller's slices
	for len(p.tasks) < threads-1 {
		ch := make(chan struct{}, 1)
		p.tasks = append(p.tasks, ch)
		p.bufs = append(p.bufs, packBuf{})
	}
	for i := p.started; i < len(p.tasks); i++ {
		go p.worker(i, p.tasks[i])
	}
	p.started = len(p.tasks)

	p.g = call
	g := &p.g
	mr, nr := g.kern.mr, g.kern.nr
	// At least three units per thread so the dynamic split can balance;
	// rows first (each row band packs its own A), column ranges when m is
	// too small to give enough bands.
	bands := max((g.m+blockM-1)/blockM, 3*threads)
	p.mc = min(roundUp((g.m+bands-1)/bands, mr), blockM)
	nBands := (g.m + p.mc - 1) / p.mc
	chunks := 1
	if nBands < 3*threads {
		chunks = (3*threads + nBands - 1) / nBands
	}
	panels := (min(g.kern.nc(), g.n) + nr - 1) / nr
	p.jrChunk = ((panels + chunks - 1) / chunks) * nr
	kc := min(blockK, g.k)
	p.pb = grow(p.pb, kc*roundUp(min(g.kern.nc(), g.n), nr))
	p.bar.init(threads)
	p.claimB.Store(0)
	p.claimU.Store(0)

	p.done.Add(threads - 1)
	for i := 0; i < threads-1; i++ {
		p.tasks[i] <- struct{}{}
	}
	p.work(&p.buf)
	p.done.Wait()
}

// claim takes the next number below end from c, or reports false when
// there is none left; numbers keep rising across blocks, so a claim that
// fails never consumes a number meant for the next block.
func claim(c *atomic.Int64, end int64) (int64, bool) {
	for {
		x := c.Load()
		if x >= end {
			return 0, false
		}
		if c.CompareAndSwap(x, x+1) {
			return x, true
		}
	}
}

// work is what every thread of a parallel call runs.
func (p *pool) work(buf *packBuf) {
	g := &p.g
	mr, nr := g.kern.mr, g.kern.nr
	buf.a = grow(buf.a, min(blockK, g.k)*p.mc)
	buf.tile = grow(buf.tile, mr*nr)
	var endB, endU int64
	ncMax := g.kern.nc()
	for jc := 0; jc < g.n; jc += ncMax {
		nc := min(ncMax, g.n-jc)
		panels := (nc + nr - 1) / nr
		chunks := (nc + p.jrChunk - 1) / p.jrChunk
		bands := (g.m + p.mc - 1) / p.mc
		for pc := 0; pc < g.k; pc += blockK {
			kc := min(blockK, g.k-pc)
			beta := g.beta
			if pc > 0 {
				beta = 1
			}
			// Pack this block of B together, a panel at a time.
			startB := endB
			endB += int64(panels)
			for {
				x, ok := claim(&p.claimB, endB)
				if !ok {
					break
				}
				j := int(x-startB) * nr
				packB(p.pb[(j/nr)*kc*nr:], g.b, g.ldb, g.transB, pc, kc, jc+j, min(nr, nc-j), nr)
			}
			p.bar.wait()
			// Then take units of C; a thread that takes consecutive units
			// of one band keeps its packed A.
			startU := endU
			endU += int64(bands * chunks)
			packed := -1
			for {
				x, ok := claim(&p.claimU, endU)
				if !ok {
					break
				}
				u := int(x - startU)
				band, chunk := u/chunks, u%chunks
				ic := band * p.mc
				mc := min(p.mc, g.m-ic)
				var rows bool
				if band != packed {
					rows = g.packA(buf.a, ic, mc, pc, kc)
					packed = band
				} else {
					rows = !g.transA && g.kern.rows != nil
				}
				jr0 := chunk * p.jrChunk
				jr1 := min(jr0+p.jrChunk, nc)
				g.macro(buf.a, p.pb, buf.tile, ic, mc, jc, jr0, jr1, kc, beta, rows)
			}
			// Nobody may repack B until every unit has used it.
			p.bar.wait()
		}
	}
}

// barrier holds threads until all n of them have arrived; it is reused
// call after call, so it allocates nothing.
type barrier struct {
	mu    sync.Mutex
	cond  sync.Cond
	n     int
	count int
	gen   uint64
}

func (b *barrier) init(n int) {
	b.cond.L = &b.mu
	b.n, b.count = n, 0
}

func (b *barrier) wait() {
	b.mu.Lock()
	gen := b.gen
	b.count++
	if b.count == b.n {
		b.count = 0
		b.gen++
		b.cond.Broadcast()
	} else {
		for gen == b.gen {
			b.cond.Wait()
		}
	}
	b.mu.Unlock()
}
