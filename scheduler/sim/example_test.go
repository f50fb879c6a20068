package sim_test

import (
	"fmt"
	"math"

	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/scheduler/sim"
)

// Project a 4-stage run of a d=256 GPT (2 blocks per stage, micro-batches of
// 16×128 tokens, ~100 GFLOP/s per stage) over 60 Mbps home links with 30 ms
// one-way latency: raw fp32 activations against a rank-32 subspace codec,
// and standard 1F1B against 1F1B with the lookahead that hides the link's
// round trip.
func ExampleRun() {
	const (
		tokens = 16 * 128 // per micro-batch
		d      = 256
		micro  = 8
	)
	fwd := 2 * 24 * d * d * tokens / 100e9 // 2 blocks of 24·d² FLOPs per token
	for _, codec := range []struct {
		name  string
		bytes int64
	}{{"fp32", tokens * d * 4}, {"subspace k=32", tokens*32*4 + tokens}} {
		rtt := 2*0.030 + 2*float64(codec.bytes)*8/60e6
		for _, sched := range []struct {
			kind      scheduler.Schedule
			lookahead int
		}{{scheduler.GPipe, 0}, {scheduler.OneFOneB, 0}, {scheduler.OneFOneB, scheduler.LookaheadFor(rtt, fwd, 2*fwd)}} {
			link := sim.Link{ForwardBPS: 60e6, BackwardBPS: 60e6, Latency: 0.030,
				ActivationBytes: codec.bytes, GradientBytes: codec.bytes}
			r, err := sim.Run(sim.Config{
				Schedule: sched.kind, Lookahead: sched.lookahead, Stages: 4, Micro: micro, Steps: 3,
				Compute:       []sim.Compute{{Forward: fwd, Backward: 2 * fwd, Optimizer: 0.01}},
				Links:         []sim.Link{link},
				Embedding:     sim.Embedding{BPS: 60e6, Latency: 0.030, Bytes: 256 * d * 4},
				TokensPerStep: tokens * micro,
			})
			if err != nil {
				fmt.Println(err)
				return
			}
			worst := 0.0
			for _, s := range r.Stages {
				worst = math.Max(worst, s.NetWait)
			}
			name := sched.kind.String()
			if sched.lookahead > 0 {
				name = fmt.Sprintf("%v lookahead %d", sched.kind, sched.lookahead)
			}
			fmt.Printf("%-13s %-16s step %.2fs  %5.0f tok/s  max net wait %.0f%%\n",
				codec.name, name, r.StepTime, r.TokensPerSecond, 100*worst)
		}
	}
	// Output:
	// fp32          gpipe            step 6.56s   2499 tok/s  max net wait 49%
	// fp32          1f1b             step 7.09s   2311 tok/s  max net wait 40%
	// fp32          1f1b lookahead 5 step 5.18s   3161 tok/s  max net wait 60%
	// subspace k=32 gpipe            step 2.53s   6483 tok/s  max net wait 5%
	// subspace k=32 1f1b             step 3.18s   5153 tok/s  max net wait 14%
	// subspace k=32 1f1b lookahead 2 step 2.53s   6483 tok/s  max net wait 18%
}
