package pipeline

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
)

// codedReplicas builds the R replicas of a 1-stage pipeline whose sum is
// coded by method, linked in their chain by pipes (not run: the tests call
// their sum directly, on the pipes themselves).
func codedReplicas(t *testing.T, R int, method compression.ReduceMethod) ([]*Worker, config.Config) {
	t.Helper()
	c := tinyConfig(t)
	c.Train.MicroBatches, c.Train.BatchSize = R, 2*R
	c.Pipeline.Replicas = R
	c.Compression.Replicas.Method = method
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	layout, err := engine.Layout(c)
	if err != nil {
		t.Fatal(err)
	}
	lower := make([]transport.Conn, R)
	upper := make([]transport.Conn, R)
	for r := 0; r+1 < R; r++ {
		a, b := transport.Pipe(transport.PipeOptions{})
		t.Cleanup(func() { a.Close(); b.Close() })
		upper[r], lower[r+1] = a, b
	}
	ws := make([]*Worker, R)
	for r := range ws {
		if ws[r], err = NewSwarmWorker(c, layout, 0, r, nil, nil); err != nil {
			t.Fatal(err)
		}
		// The chain a step's route would give them (routeStep).
		rp := ws[r].rep
		rp.r, rp.R, rp.lower, rp.upper = r, R, lower[r], upper[r]
	}
	return ws, c
}

// sumAll runs every replica's sum of step at once.
func sumAll(t *testing.T, ws []*Worker, step int) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(ws))
	sent := make([]int64, len(ws))
	for r, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent[r], errs[r] = w.sumReplicas(ctx, step)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", r, err)
		}
	}
	return sent
}

// fillGrads gives every replica's gradients random values over four
// decades, and returns them.
func fillGrads(ws []*Worker, seed uint64) [][][]float32 {
	rng := rand.New(rand.NewPCG(seed, 2))
	g := make([][][]float32, len(ws))
	for r, w := range ws {
		for _, p := range w.st.Params() {
			for i := range p.Grad {
				p.Grad[i] = float32(rng.NormFloat64() * math.Pow(10, 4*rng.Float64()-5))
			}
			g[r] = append(g[r], slices.Clone(p.Grad))
		}
	}
	return g
}

// TestReplicaCodecSameBits: with each codec of [compression.replicas],
// every replica of a 3-replica chain ends each step with the same bits —
// on the second step too, when each adds its own error-feedback residual.
// For fp16 and int8 those bits are exactly the chain's decoded total
// D(C(D(C(D(C(g0)) + g1)) + g2)), rebuilt here chunk by chunk, and they
// differ from the last replica's undecoded sum in most elements: a last
// replica that kept its own sum instead of the decoded total would hold
// other bits than the rest, which this test (and the driver's check of the
// replicas' gradient norms every step) would catch.
func TestReplicaCodecSameBits(t *testing.T) {
	const R = 3
	for _, m := range []compression.ReduceMethod{compression.ReduceNone, compression.ReduceFP16, compression.ReduceInt8, compression.ReducePowerSGD} {
		t.Run(fmt.Sprintf("method=%v", m), func(t *testing.T) {
			ws, _ := codedReplicas(t, R, m)
			for step := range 2 {
				g := fillGrads(ws, uint64(step+1))
				sent := sumAll(t, ws, step)
				var exact, undecoded int
				for k, p := range ws[0].st.Params() {
					for r := 1; r < R; r++ {
						if q := ws[r].st.Params()[k].Grad; !slices.EqualFunc(p.Grad, q, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
							t.Fatalf("step %d: replica %d's %s differs from replica 0's", step, r, p.Name)
						}
					}
					if step > 0 || (m != compression.ReduceFP16 && m != compression.ReduceInt8) {
						continue
					}
					// The chain, rebuilt: each sender's partial sum
					// coded and decoded, the last one's total too.
					for off := 0; off < len(p.Grad); off += replicaChunk {
						n := min(len(p.Grad)-off, replicaChunk)
						acc := make([]float32, n)
						var s []float32
						for r := range R {
							s = slices.Clone(g[r][k][off : off+n])
							if r > 0 {
								for i := range s {
									s[i] = acc[i] + s[i]
								}
							}
							if _, err := compression.AppendReduceChunk(nil, s, acc, m); err != nil {
								t.Fatal(err)
							}
						}
						for i, v := range p.Grad[off : off+n] {
							if math.Float32bits(v) != math.Float32bits(acc[i]) {
								t.Fatalf("%s[%d]: %v, the chain's decoded total is %v", p.Name, off+i, v, acc[i])
							}
							exact++
							if s[i] != acc[i] {
								undecoded++
							}
						}
					}
				}
				if step == 0 && (m == compression.ReduceFP16 || m == compression.ReduceInt8) {
					t.Logf("%v: %d of %d elements of the decoded total differ from the last replica's own sum", m, undecoded, exact)
					if undecoded < exact/2 {
						t.Errorf("only %d of %d elements differ between the decoded total and the undecoded sum: the test could not tell them apart", undecoded, exact)
					}
				}
				raw := ws[0].rep.rawBytes()
				t.Logf("step %d: replica 0 sent %d bytes, %.2f× under fp32's %d", step, sent[0], float64(raw)/float64(sent[0]), raw)
			}
		})
	}
}

// TestReplicaCodecBytes: what each end of a 2-replica chain sends per
// step is exactly its chunks' frames (and what ReplicaSumBytes counts for
// the simulator) — fp16 2 bytes a value and a 2-byte
// scale a chunk, int8 1 byte a value and a 4-byte scale a 64-value block,
// powersgd the float32 factors of every matrix (and whole the 1-D
// tensors), each chunk with a 30-byte frame header — and so about 2×, 4×
// and (for this 32-wide model at rank 4) 5× less than fp32.
func TestReplicaCodecBytes(t *testing.T) {
	for _, tc := range []struct {
		m      compression.ReduceMethod
		lo, hi float64
	}{
		{compression.ReduceNone, 0.99, 1.0},
		{compression.ReduceFP16, 1.95, 2.0},
		{compression.ReduceInt8, 3.6, 3.77},
		{compression.ReducePowerSGD, 5, 6},
	} {
		ws, c := codedReplicas(t, 2, tc.m)
		fillGrads(ws, 9)
		sent := sumAll(t, ws, 0)
		layout, err := engine.Layout(c)
		if err != nil {
			t.Fatal(err)
		}
		if perLink, _ := ReplicaSumBytes(c, layout); perLink[0] != sent[0] {
			t.Errorf("%v: sent %d bytes, ReplicaSumBytes (the simulator's count) says %d", tc.m, sent[0], perLink[0])
		}
		rc := ws[0].rep.codec
		var lens []int // the float32 counts of every chunk, every pass
		add := func(n int) {
			for ; n > 0; n -= min(n, replicaChunk) {
				lens = append(lens, min(n, replicaChunk))
			}
		}
		chunkM := tc.m
		if tc.m == compression.ReducePowerSGD {
			add(rc.psgd.PLen())
			for i, tn := range rc.tensors {
				if !rc.psgd.LowRank(i) {
					add(len(tn.buf))
				}
			}
			add(rc.psgd.QLen())
		} else {
			for _, tn := range rc.tensors {
				add(len(tn.buf))
			}
		}
		var want int64
		for _, n := range lens {
			want += int64(wire.HeaderSize + compression.ReduceChunkLen(n, chunkM))
		}
		ratio := float64(ws[0].rep.rawBytes()) / float64(sent[0])
		t.Logf("%v: %d bytes in %d frames, %.3f× under fp32", tc.m, sent[0], len(lens), ratio)
		if sent[0] != want || sent[1] != want {
			t.Errorf("%v: the ends sent %d and %d bytes, want %d each (%d frames)", tc.m, sent[0], sent[1], want, len(lens))
		}
		if ratio < tc.lo || ratio > tc.hi {
			t.Errorf("%v: %.3f× under fp32, want %g..%g", tc.m, ratio, tc.lo, tc.hi)
		}
	}
}

// TestDriverCatchesUndecodedTotal: with a lossy codec the last replica must
// use the decoded total like every other replica. One that keeps its own
// undecoded sum holds other bits, and the driver stops the run at that
// step, naming the stage, instead of letting the replicas drift apart.
func TestDriverCatchesUndecodedTotal(t *testing.T) {
	c := tinyConfig(t)
	c.Pipeline.Stages = 2
	c.Pipeline.Replicas = 2
	c.Compression.Replicas.Method = compression.ReduceInt8
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keepUndecodedTotal.Store(false) }) // after the pipeline's own cleanup
	d := testPipeline(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d.Step(ctx, 0, 1e-3); err != nil {
		t.Fatalf("a step of a sound int8 sum: %v", err)
	}
	keepUndecodedTotal.Store(true)
	_, err := d.Step(ctx, 1, 1e-3)
	if err == nil || !strings.Contains(err.Error(), "replicas disagree on their summed gradient") {
		t.Fatalf("a last replica that kept its undecoded total: %v, want the driver to find the replicas disagree", err)
	}
}
