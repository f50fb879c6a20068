package config

import (
	"fmt"
	"strconv"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/scheduler"
)

// ReplicaCount is pipeline.replicas, with 0 (a config built in code
// without Default) read as its default, 1.
func (p Pipeline) ReplicaCount() int { return max(p.Replicas, 1) }

// validateReplicas checks pipeline.replicas and refuses, with the reason,
// what the runtime does not run with several replicas a stage yet
// (docs/swarm.md says where it stands).
func (c Config) validateReplicas(bad func(key string, val any, allowed string)) {
	p := c.Pipeline
	R := p.Replicas
	if R < 0 {
		bad("pipeline.replicas", R, "must be at least 1 (peers holding each stage)")
		return
	}
	if R <= 1 {
		return
	}
	if M := c.Train.MicroBatches; M >= 1 && R > M {
		bad("pipeline.replicas", R, fmt.Sprintf("must be at most train.micro_batches = %d: micro-batch m goes to replica m mod R, and a replica without one would compute nothing yet hold up the gradient sum", M))
	}
	// Both keep state per link or per stream that assumes one sender and
	// one receiver for every micro-batch of a stage; with replicas that
	// state would have to be keyed per replica, which it is not yet.
	if p.Schedule == scheduler.Async {
		bad("pipeline.replicas", R, `needs pipeline.schedule = "1f1b" or "gpipe": the async schedule's stream of weight versions is not kept per replica yet`)
	}
	if m := c.Compression.Method; m == compression.MethodSubspaceTC {
		bad("pipeline.replicas", R, fmt.Sprintf(`does not run with compression.method = %s yet: its coders' state (predictors, rotations) is kept per stage link, not per replica's link; use "subspace", "lowrank", "int8" or another codec`, strconv.Quote(m.String())))
	}
	for i, e := range c.Faults.Events {
		if e.Kind == "cut" || e.Kind == "slow" || e.Kind == "corrupt" {
			bad(fmt.Sprintf("faults.event[%d].kind", i), strconv.Quote(e.Kind), "with pipeline.replicas > 1 only kill, join and leave: a link fault names a stage's link, and a swarm's links are between replicas")
		}
	}
	if p.Processes {
		for i, e := range c.Faults.Events {
			if e.Kind == "join" || e.Kind == "kill" || e.Kind == "leave" {
				bad(fmt.Sprintf("faults.event[%d].kind", i), strconv.Quote(e.Kind), `needs goroutines or WebRTC peers (pipeline.processes = false): stage processes of a swarm are linked by lanes only, and a peer cannot join them`)
				break
			}
		}
	}
	if p.Processes && (p.Routing == "throughput" || p.SlowFraction > 0) {
		bad("pipeline.processes", true, `does not take pipeline.routing = "throughput" or pipeline.slow_fraction with replicas: stage processes are linked by lanes only, and those routes leave the lanes (use goroutines or transport = "webrtc")`)
	}
	switch p.Routing {
	case "", "round-robin", "throughput":
	default:
		bad("pipeline.routing", strconv.Quote(p.Routing), `must be "round-robin" or "throughput"`)
	}
	if p.SlowFraction < 0 || p.SlowFraction >= 1 || (p.SlowFraction > 0 && p.SlowSteps < 1) {
		bad("pipeline.slow_fraction", p.SlowFraction, "must be in [0, 1) (0: off), with pipeline.slow_steps ≥ 1")
	}
}
