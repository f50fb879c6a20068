package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/trainer"
	"github.com/narrowband/narrowband/scheduler/sim"
)

// cmdSimulate predicts step time and tokens/s for a config from per-stage
// compute times (given in [simulate], or measured by a short real run here)
// and the config's link profile.
func cmdSimulate(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	a, err := parseArgs(argv, map[string]bool{"set": true, "json": false})
	if err != nil {
		return err
	}
	if len(a.pos) != 1 {
		return fmt.Errorf("simulate: usage: narrowband simulate FILE.toml [--set k=v ...] [--json]")
	}
	cfg, err := config.Load(a.pos[0], a.all("set"))
	if err != nil {
		return err
	}
	S := cfg.Pipeline.Stages
	var comp []sim.Compute
	if len(cfg.Simulate.ForwardMs) > 0 || len(cfg.Simulate.BackwardMs) > 0 {
		pick := func(v []float64, i int) float64 {
			switch len(v) {
			case 0:
				return 0
			case 1:
				return v[0] / 1000
			}
			return v[i] / 1000
		}
		for i := 0; i < S; i++ {
			comp = append(comp, sim.Compute{Forward: pick(cfg.Simulate.ForwardMs, i), Backward: pick(cfg.Simulate.BackwardMs, i), Optimizer: pick(cfg.Simulate.OptimizerMs, i)})
		}
	} else {
		fmt.Fprintf(stderr, "measuring compute with a 4-step run of %s on this machine…\n", a.pos[0])
		if comp, err = trainer.MeasureCompute(ctx, cfg, 4); err != nil {
			return err
		}
	}
	p, err := trainer.Predict(cfg, comp)
	if err != nil {
		return err
	}
	if a.str("json", "") == "true" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	_, err = fmt.Fprint(stdout, p)
	return err
}
