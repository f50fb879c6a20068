package config

import (
	"fmt"
	"strconv"

	"github.com/narrowband/narrowband/compression"
)

// Verify is how a swarm checks its peers' work (docs/trust.md): spot
// checks in which another replica of a stage recomputes a share of its
// outputs and the coordinator compares hashes of the bytes.
type Verify struct {
	// Fraction is the share of each step's (stage, micro-batch) forward
	// outputs that another replica of the same stage recomputes, drawn
	// after the step's reports are in (0: no checks). Needs
	// pipeline.replicas ≥ 2.
	Fraction float64 `toml:"fraction"`
	// MaxMismatches is how many failed checks a replica may have before
	// it is evicted; each failed check redoes the step. The default, 1:
	// with deterministic kernels on one kind of machine a mismatch is
	// proof, not noise (an honest run has none), so the first one
	// evicts.
	MaxMismatches int `toml:"max_mismatches"`
}

func defaultVerify() Verify { return Verify{MaxMismatches: 1} }

// Checks reports whether the run spot-checks its peers.
func (v Verify) Checks() bool { return v.Fraction > 0 }

func (c Config) validateVerify(bad func(key string, val any, allowed string)) {
	v := c.Verify
	if !(v.Fraction >= 0 && v.Fraction <= 1) {
		bad("verify.fraction", v.Fraction, "must be in [0, 1] (the share of micro-batches another replica recomputes; 0: no checks)")
		return
	}
	if v.MaxMismatches < 1 {
		bad("verify.max_mismatches", v.MaxMismatches, "must be at least 1 (failed spot checks before a replica is evicted)")
	}
	if !v.Checks() {
		return
	}
	p := c.Pipeline
	switch {
	case p.ReplicaCount() < 2:
		bad("verify.fraction", v.Fraction, "needs pipeline.replicas ≥ 2: a spot check is another replica of the same stage recomputing an output, and with one a stage there is none")
	case p.Stages < 2:
		bad("verify.fraction", v.Fraction, "needs pipeline.stages ≥ 2: what is checked is a stage's output as the next stage received it")
	case p.Processes:
		bad("verify.fraction", v.Fraction, `needs goroutines or WebRTC peers (pipeline.processes = false): stage processes are linked by lanes only, and a check sends a kept input to another lane's replica`)
	case c.Web.Contribute:
		// A browser tab computes with WebAssembly kernels whose float
		// results need not be the bits of this machine's (no FMA
		// contract, another summation order): an exact check would
		// accuse an honest tab. No tolerance path is built.
		bad("verify.fraction", v.Fraction, "does not run with web.contribute = true: a browser peer's kernels do not give the same bits as native ones, and the checks compare bits (docs/trust.md)")
	}
	cc := c.Compression
	if cc.Method == compression.MethodLowRank || cc.ErrorFeedback {
		bad("verify.fraction", v.Fraction, fmt.Sprintf(`does not run with compression.method = %s%s: a checker must encode its recomputed output to the same bytes, and that codec keeps per-link state (warm starts, error feedback) that only the sender holds; use "none", "fp16", "bf16", "int8", "topk" without error feedback, or "subspace"`,
			strconv.Quote(cc.Method.String()), map[bool]string{true: " with error_feedback", false: ""}[cc.ErrorFeedback]))
	}
}
