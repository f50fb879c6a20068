package trainer

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
)

// BenchmarkReplicas trains the quickstart's model as 1 stage held by one
// process and as 1 stage held by 2 replicas in processes of their own,
// each process on one thread (train.threads = 1), alternately round after
// round so that drift in the machine's load falls on both alike, and
// reports the steady tokens/s of each (the first and last step left out:
// start-up, warm caches, the final evaluation) and their ratio, which on
// two free cores approaches 2 less the gradient sum's share of a step;
// and the cores each run had (CPU seconds of the coordinator and its
// workers over the run's wall time), without which no ratio can be read:
// on a machine whose cores are taken the replicas share one and the ratio
// stays near 1.
//
//	go test -run '^$' -bench Replicas -benchtime 2x ./internal/runtime/trainer
func BenchmarkReplicas(b *testing.B) {
	c := tinyConfig(&testing.T{})
	c.Run.Steps = 6
	c.Model = benchModel(c.Model)
	c.Pipeline.Stages = 1
	c.Pipeline.Processes = true
	c.Train.Threads = 1
	c.Train.BatchSize = 16
	c.Train.MicroBatches = 4
	c.Train.EvalInterval = 0
	c.Train.EvalBatches = 1
	run := func(R int) (tokens, seconds float64, replicaBytes int64, cores float64) {
		cc := c
		cc.Pipeline.Replicas = R
		if err := cc.Validate(); err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		t0, c0 := time.Now(), cpuSeconds()+childCPUSeconds()
		if _, err := Run(context.Background(), Options{Config: cc, Out: dir}); err != nil {
			b.Fatal(err)
		}
		cores = (cpuSeconds() + childCPUSeconds() - c0) / time.Since(t0).Seconds()
		recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
		if err != nil {
			b.Fatal(err)
		}
		if len(recs) != cc.Run.Steps {
			b.Fatalf("%d step records, want %d", len(recs), cc.Run.Steps)
		}
		perStep := float64(cc.Train.BatchSize * cc.Model.BlockSize)
		for _, r := range recs[1 : len(recs)-1] {
			tokens += perStep
			seconds += perStep / r.TokensPerSecond
			replicaBytes = r.ReplicaBytes
		}
		return tokens, seconds, replicaBytes, cores
	}
	run(2) // warm the page cache, the corpus and the binary
	var t1, s1, t2, s2, k1, k2 float64
	var bytes2 int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t, s, _, k := run(1)
		t1, s1, k1 = t1+t, s1+s, k1+k
		t, s, n, k := run(2)
		t2, s2, bytes2, k2 = t2+t, s2+s, n, k2+k
	}
	b.StopTimer()
	b.ReportMetric(k1/float64(b.N), "cores-1replica")
	b.ReportMetric(k2/float64(b.N), "cores-2replicas")
	b.ReportMetric(t1/s1, "tokens/s-1replica")
	b.ReportMetric(t2/s2, "tokens/s-2replicas")
	b.ReportMetric((t2/s2)/(t1/s1), "ratio")
	// Tokens per CPU-second, two replicas over one: what the replicas
	// cost beyond the cores they were given (each its own optimizer step,
	// the sum, the caches they share when they share a core).
	b.ReportMetric((t2/s2/(k2/float64(b.N)))/(t1/s1/(k1/float64(b.N))), "ratio-per-core")
	b.ReportMetric(float64(bytes2), "replica-bytes/step")
}

// childCPUSeconds is the user+system CPU time of this process's children
// that have ended (the runs' worker processes, once each run closed).
func childCPUSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
