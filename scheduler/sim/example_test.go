package sim_test

import (
	"fmt"
	"math"

	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/scheduler/sim"
)

// Project a 4-stage run of a d=256 GPT (2 blocks per stage, micro-batches of
// 16×128 tokens, ~100 GFLOP/s per stage) over 60 Mbps home links with 30 ms
// one-way latency: raw fp32 activations against a rank-32 subspace codec.
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
		for _, kind := range []scheduler.Schedule{scheduler.GPipe, scheduler.OneFOneB} {
			link := sim.Link{ForwardBPS: 60e6, BackwardBPS: 60e6, Latency: 0.030,
				ActivationBytes: codec.bytes, GradientBytes: codec.bytes}
			r, err := sim.Run(sim.Config{
				Schedule: kind, Stages: 4, Micro: micro, Steps: 3,
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
			fmt.Printf("%-13s %-5v step %.2fs  %5.0f tok/s  max net wait %.0f%%\n",
				codec.name, kind, r.StepTime, r.TokensPerSecond, 100*worst)
		}
	}
	// Output:
	// fp32          gpipe step 6.56s   2499 tok/s  max net wait 49%
	// fp32          1f1b  step 7.09s   2311 tok/s  max net wait 40%
	// subspace k=32 gpipe step 2.53s   6483 tok/s  max net wait 5%
	// subspace k=32 1f1b  step 3.18s   5153 tok/s  max net wait 14%
}
