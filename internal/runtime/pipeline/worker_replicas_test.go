package pipeline

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
)

// replicaWorkers builds the R replicas of a 1-stage pipeline linked in
// their chain by pipes (not run: the tests call their sum directly, on
// the pipes themselves rather than the links a running worker reads).
func replicaWorkers(t *testing.T, R int) ([]*Worker, config.Config) {
	return codedReplicas(t, R, compression.ReduceNone)
}

// TestReplicaSumIsChainOrder: after the sum every replica holds, bit for
// bit, ((g0 + g1) + g2) for every element — the order docs/swarm.md
// promises, whatever the goroutines' timing — and that order is not a
// formality: another association gives other bits for these gradients.
func TestReplicaSumIsChainOrder(t *testing.T) {
	const R = 3
	ws, _ := replicaWorkers(t, R)
	rng := rand.New(rand.NewPCG(1, 2))
	var want [][]float32
	other := 0 // elements where g0 + (g1 + g2) differs
	for k, p := range ws[0].st.Params() {
		sum := make([]float32, len(p.Grad))
		g := make([][]float32, R)
		for r, w := range ws {
			g[r] = w.st.Params()[k].Grad
			for i := range g[r] {
				// Magnitudes spread over six decades make the
				// association of fp32 additions show.
				g[r][i] = float32(rng.NormFloat64() * math.Pow(10, 6*rng.Float64()-3))
			}
		}
		for i := range sum {
			sum[i] = (g[0][i] + g[1][i]) + g[2][i]
			if alt := g[0][i] + (g[1][i] + g[2][i]); math.Float32bits(alt) != math.Float32bits(sum[i]) {
				other++
			}
		}
		want = append(want, sum)
	}
	if other == 0 {
		t.Fatal("every element sums alike in every order: the test cannot tell the orders apart")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, R)
	sent := make([]int64, R)
	for r, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent[r], errs[r] = w.sumReplicas(ctx, 7)
		}()
	}
	wg.Wait()
	for r, w := range ws {
		if errs[r] != nil {
			t.Fatalf("replica %d: %v", r, errs[r])
		}
		for k, p := range w.st.Params() {
			for i, v := range p.Grad {
				if math.Float32bits(v) != math.Float32bits(want[k][i]) {
					t.Fatalf("replica %d, %s[%d]: %v, want ((g0 + g1) + g2) = %v", r, p.Name, i, v, want[k][i])
				}
			}
		}
	}
	// The ends send the gradient once (up, or the total down); the middle
	// twice (its partial sum up, the total down).
	if sent[1] <= sent[0] || sent[0] != sent[2] {
		t.Errorf("bytes sent by replicas 0, 1, 2: %v; want the middle one to send twice what each end sends", sent)
	}
}

// TestReplicaSumRejectsBadFrames: a frame on a chain link that is not the
// chunk the sum waits for — corrupt, of another type, step, chunk or
// stage, or of the wrong size — ends the sum with an error, never a panic
// or a sum of the wrong numbers; a frame of an aborted attempt is skipped.
func TestReplicaSumRejectsBadFrames(t *testing.T) {
	const step = 3
	chunk0 := func(ws []*Worker) int { return min(len(ws[1].st.Params()[0].Grad), replicaChunk) }
	for _, tc := range []struct {
		name  string
		frame func(n int) []byte
	}{
		{"corrupt", func(n int) []byte {
			f := replicaFrame(0, frameStep(0, step), 0, make([]float32, n))
			f[len(f)-1] ^= 0x40
			return f
		}},
		{"truncated", func(n int) []byte {
			return replicaFrame(0, frameStep(0, step), 0, make([]float32, n))[:wire.HeaderSize-1]
		}},
		{"another type", func(n int) []byte {
			return wire.Append(nil, wire.Header{Type: wire.TypeGradient, Step: frameStep(0, step)}, make([]byte, 4*n))
		}},
		{"another step", func(n int) []byte { return replicaFrame(0, frameStep(0, step+1), 0, make([]float32, n)) }},
		{"another chunk", func(n int) []byte { return replicaFrame(0, frameStep(0, step), 1, make([]float32, n)) }},
		{"another stage", func(n int) []byte { return replicaFrame(1, frameStep(0, step), 0, make([]float32, n)) }},
		{"short", func(n int) []byte { return replicaFrame(0, frameStep(0, step), 0, make([]float32, n-1)) }},
		{"long", func(n int) []byte { return replicaFrame(0, frameStep(0, step), 0, make([]float32, n+1)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, _ := replicaWorkers(t, 2)
			ws[1].ctl.epoch = 1
			// The test speaks for replica 0 on its end of the chain.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stale := replicaFrame(0, frameStep(0, step), 0, make([]float32, chunk0(ws)))
			bad := tc.frame(chunk0(ws))
			if tc.name != "corrupt" && tc.name != "truncated" {
				// The bad frame is of the current attempt, as a stale one is not.
				h, p, err := wire.Decode(bad, transport.MaxMessage)
				if err != nil {
					t.Fatal(err)
				}
				_, st := splitStep(h.Step)
				h.Step = frameStep(1, st)
				bad = wire.Append(nil, h, p)
			}
			for _, f := range [][]byte{stale, bad} {
				if err := ws[0].rep.upper.Send(ctx, f); err != nil {
					t.Fatal(err)
				}
			}
			before := math.Float32bits(ws[1].st.Params()[0].Grad[0])
			_, err := ws[1].sumReplicas(ctx, step)
			if err == nil || ctx.Err() != nil {
				t.Fatalf("sum took a %s frame: err %v (context %v)", tc.name, err, ctx.Err())
			}
			if got := math.Float32bits(ws[1].st.Params()[0].Grad[0]); got != before {
				t.Errorf("the %s frame changed the gradient", tc.name)
			}
		})
	}
}

// TestReplicaSumSkipsStaleFrames: a chunk of an aborted attempt (an older
// epoch) is not added; the attempt's own chunks are, after it.
func TestReplicaSumSkipsStaleFrames(t *testing.T) {
	const step = 3
	ws, _ := replicaWorkers(t, 2)
	ws[1].ctl.epoch = 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var own []float32
	var chunks [][]float32
	for _, p := range ws[1].st.Params() {
		for i := range p.Grad {
			p.Grad[i] = float32(i % 7)
		}
		own = append(own, p.Grad...)
		for g := p.Grad; len(g) > 0; g = g[min(len(g), replicaChunk):] {
			chunks = append(chunks, g[:min(len(g), replicaChunk)])
		}
	}
	end := ws[0].rep.upper
	go func() {
		for k, c := range chunks {
			v := make([]float32, len(c))
			for i := range v {
				v[i] = 1000 // what a stale frame would add
			}
			end.Send(ctx, replicaFrame(0, frameStep(0, step), k, v))
			for i := range v {
				v[i] = 0.5
			}
			end.Send(ctx, replicaFrame(0, frameStep(1, step), k, v))
		}
	}()
	done := make(chan error, 1)
	go func() { _, err := ws[1].sumReplicas(ctx, step); done <- err }()
	for range chunks {
		if _, err := end.Recv(ctx); err != nil { // the totals, back down
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range ws[1].st.Params() {
		for _, v := range p.Grad {
			if want := 0.5 + own[n]; v != want {
				t.Fatalf("element %d: %v, want 0.5 + %v", n, v, own[n])
			}
			n++
		}
	}
}

// FuzzReplicaFrame: whatever arrives on a chain link, the sum returns (an
// error or a sum) and never panics.
func FuzzReplicaFrame(f *testing.F) {
	f.Add(replicaFrame(0, frameStep(0, 1), 0, []float32{1, 2, 3}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ws, _ := replicaWorkers(t, 2)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ws[0].rep.upper.Send(ctx, b)
		ws[0].rep.upper.Close() // nothing more comes: the sum must end
		ws[1].sumReplicas(ctx, 1)
	})
}
