package stages

import (
	"runtime"
	"sync"
)

// rangeJob is one data-parallel loop. Jobs are preallocated structs held by
// a Stage, so handing a pointer to the pool allocates nothing. run is called
// with disjoint [lo, hi) ranges; chunk (0 ≤ chunk < poolSize()) lets a job
// use per-chunk scratch memory. Every job in this package writes each index
// independently of how the range is cut, so results are bit-identical for
// any number of cores.
type rangeJob interface {
	run(chunk, lo, hi int)
}

type poolTask struct {
	job           rangeJob
	chunk, lo, hi int
	wg            *sync.WaitGroup
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
					t.job.run(t.chunk, t.lo, t.hi)
					t.wg.Done()
				}
			}()
		}
	})
	return pool.n
}

// parallelFor runs job over [0, n) in up to poolSize() chunks of at least
// grain indices; the caller runs the first chunk itself. wg is the caller's
// preallocated WaitGroup (one per Stage: a Stage is used by one goroutine).
func parallelFor(wg *sync.WaitGroup, n, grain int, job rangeJob) {
	chunks := poolSize()
	if grain < 1 {
		grain = 1
	}
	if m := n / grain; m < chunks {
		chunks = m
	}
	if chunks <= 1 {
		job.run(0, 0, n)
		return
	}
	wg.Add(chunks - 1)
	for c := 1; c < chunks; c++ {
		pool.tasks <- poolTask{job: job, chunk: c, lo: c * n / chunks, hi: (c + 1) * n / chunks, wg: wg}
	}
	job.run(0, 0, n/chunks)
	wg.Wait()
}

// exec is a Stage's execution context: its WaitGroup and one preallocated
// job struct per kind of parallel loop, so dispatching work allocates
// nothing. It belongs to one goroutine at a time.
type exec struct {
	wg       sync.WaitGroup
	lnFwdJob lnFwdJob
	lnBwdJob lnBwdJob
	geluJob  geluJob
	attnJob  attnJob
	ceJob    ceJob
}
