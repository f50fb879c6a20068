package stages

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// rangeJob is one data-parallel loop. Jobs are preallocated structs held by
// a Stage, so handing a pointer to the pool allocates nothing. run is called
// with disjoint [lo, hi) ranges; chunk is the worker slot running the range
// (0 ≤ chunk < poolSize(), one range at a time per slot), so a job can use
// per-slot scratch memory. Every job in this package writes each index
// independently of how the range is cut, so results are bit-identical for
// any number of cores and however the pieces fall to the slots.
type rangeJob interface {
	run(chunk, lo, hi int)
}

type poolTask struct {
	par  *parState
	slot int
}

// parState is one caller's dispatch state for parallelFor: preallocated
// (in an exec or an AdamW), so dispatching allocates nothing.
type parState struct {
	wg        sync.WaitGroup
	next      atomic.Int64
	job       rangeJob
	n, pieces int
}

// work runs pieces of the current job, taken from a shared counter, as
// worker slot `slot` until none are left. Taking pieces dynamically keeps
// both cores busy on a shared machine where one thread is descheduled for
// a while; which slot runs a piece changes nothing in the results.
func (p *parState) work(slot int) {
	for {
		i := int(p.next.Add(1)) - 1
		if i >= p.pieces {
			return
		}
		p.job.run(slot, i*p.n/p.pieces, (i+1)*p.n/p.pieces)
	}
}

// The pool is process-wide and lives as long as the process: its workers
// only ever wait on the task channel, and every Stage in the process (a
// one-machine pipeline runs several) shares the same cores anyway.
var pool struct {
	once  sync.Once
	n     int
	tasks chan poolTask
}

func poolSize() int {
	pool.once.Do(func() {
		pool.n = runtime.GOMAXPROCS(0)
		pool.tasks = make(chan poolTask, 4*pool.n)
		for i := 1; i < pool.n; i++ {
			go func() {
				for t := range pool.tasks {
					t.par.work(t.slot)
					t.par.wg.Done()
				}
			}()
		}
	})
	return pool.n
}

// piecesPerSlot is how many pieces each worker slot gets on average: more
// than one so a slot whose thread is descheduled leaves its share to the
// others.
const piecesPerSlot = 4

// parallelFor runs job over [0, n) in pieces of at least grain indices on
// up to poolSize() worker slots (the caller is slot 0). The slot number a
// piece is run with (the chunk argument of rangeJob.run) is below
// poolSize() and is used by one piece at a time, so jobs can index
// per-slot scratch memory with it. p is the caller's preallocated state
// (a Stage is used by one goroutine at a time).
func parallelFor(p *parState, n, grain int, job rangeJob) {
	slots := poolSize()
	if grain < 1 {
		grain = 1
	}
	pieces := min(n/grain, slots*piecesPerSlot)
	if pieces <= 1 || slots <= 1 {
		job.run(0, 0, n)
		return
	}
	slots = min(slots, pieces)
	p.job, p.n, p.pieces = job, n, pieces
	p.next.Store(0)
	p.wg.Add(slots - 1)
	for c := 1; c < slots; c++ {
		pool.tasks <- poolTask{par: p, slot: c}
	}
	p.work(0)
	p.wg.Wait()
	p.job = nil
}

// exec is a Stage's execution context: its WaitGroup and one preallocated
// job struct per kind of parallel loop, so dispatching work allocates
// nothing. It belongs to one goroutine at a time.
type exec struct {
	par      parState
	lnFwdJob lnFwdJob
	lnBwdJob lnBwdJob
	geluJob  geluJob
	attnJob  attnJob
	ceJob    ceJob

	rmsJob    rmsJob
	ropeJob   ropeJob
	swigluJob swigluJob
}
