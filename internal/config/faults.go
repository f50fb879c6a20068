package config

import (
	"fmt"
	"math"
	"strconv"
)

// Faults is how a run notices and survives failures, and the failures a
// scenario injects on purpose to test that.
type Faults struct {
	// PeerTimeout (seconds): a stage whose peer has sent nothing, not even
	// a heartbeat, for this long is declared dead and handed to a spare.
	PeerTimeout float64 `toml:"peer_timeout"`
	// Heartbeat (seconds) between liveness messages on every link and to
	// the coordinator; 0 = PeerTimeout/8, at most 1 s.
	Heartbeat float64 `toml:"heartbeat"`
	// LinkTimeout (seconds): a stage that has heard nothing on a link for
	// this long while it waits on it asks the coordinator to re-establish
	// that link (a new ICE session through signaling) and redo the step;
	// 0 = PeerTimeout/2. Both ends stay alive meanwhile unless their own
	// heartbeats stop.
	LinkTimeout float64 `toml:"link_timeout"`
	// MaxRejects is how many bad frames (checksum, codec or value checks)
	// a peer may send before it is evicted and replaced like a dead one.
	MaxRejects int `toml:"max_rejects"`
	// SnapshotEvery is the number of steps between snapshots of every
	// stage's shard (weights, optimizer state, step) kept by the
	// coordinator, the point a run rolls back to when a stage changes
	// hands. WebRTC runs, and async runs (any failure rolls them back).
	SnapshotEvery int `toml:"snapshot_every"`
	// Events are failures to inject, executed for real.
	Events []FaultEvent `toml:"event"`
}

// FaultEvent is one injected failure. Link faults (cut, slow, corrupt) act
// on the link from Stage to Stage+1, in Stage's process.
type FaultEvent struct {
	AtStep int    `toml:"at_step"` // 1-based step during which it happens
	Kind   string `toml:"kind"`    // kill, cut, slow, corrupt, join, leave, lie
	Stage  int    `toml:"stage"`
	// Duration (seconds) of a cut, slow or corrupt fault.
	Duration float64 `toml:"duration"`
	// BandwidthMbps of a slowed link (default 1).
	BandwidthMbps float64 `toml:"bandwidth_mbps"`
	// Frames, for a corrupt fault: corrupt exactly the next Frames tensor
	// frames instead of (or as well as) every frame for Duration. A count
	// is what a reproducible test needs: how many frames a time window
	// holds depends on how fast the machine redoes the step.
	Frames int `toml:"frames"`
	// Replica (a swarm's kill or leave): which of the stage's replicas,
	// by its place in the stage's summing order at that step (0: the
	// first).
	Replica int `toml:"replica"`
	// Fraction and Scale (a lie, docs/trust.md): from this step on, the
	// replica multiplies its activation outputs by 1+Scale on a share
	// Fraction of its micro-batches (chosen from the run's seed): a peer
	// that lies slightly, for the spot checks to catch.
	Fraction float64 `toml:"fraction"`
	Scale    float64 `toml:"scale"`
	// Checks (a lie): the liar also lies in the spot checks it runs for
	// others (its recomputed outputs times 1+Scale, every one), to have
	// honest replicas evicted; Fraction may then be 0.
	Checks bool `toml:"checks"`
}

// HeartbeatSeconds is the effective heartbeat interval.
func (f Faults) HeartbeatSeconds() float64 {
	if f.Heartbeat > 0 {
		return f.Heartbeat
	}
	return min(1, f.PeerTimeout/8)
}

// LinkTimeoutSeconds is the effective link timeout.
func (f Faults) LinkTimeoutSeconds() float64 {
	if f.LinkTimeout > 0 {
		return f.LinkTimeout
	}
	return f.PeerTimeout / 2
}

func defaultFaults() Faults {
	return Faults{PeerTimeout: 10, MaxRejects: 3, SnapshotEvery: 10}
}

func (c Config) validateFaults(bad func(key string, val any, allowed string)) {
	f := c.Faults
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	if !(f.PeerTimeout > 0) || !finite(f.PeerTimeout) {
		bad("faults.peer_timeout", f.PeerTimeout, "must be a positive number of seconds")
	}
	if f.Heartbeat < 0 || !finite(f.Heartbeat) || (f.Heartbeat > 0 && f.Heartbeat >= f.PeerTimeout/2) {
		bad("faults.heartbeat", f.Heartbeat, "must be 0 (automatic) or a number of seconds below faults.peer_timeout/2")
	}
	if f.LinkTimeout < 0 || !finite(f.LinkTimeout) || (f.LinkTimeout > 0 && f.LinkTimeout <= 2*f.HeartbeatSeconds()) {
		bad("faults.link_timeout", f.LinkTimeout, "must be 0 (automatic) or longer than two heartbeats")
	}
	if f.MaxRejects < 1 {
		bad("faults.max_rejects", f.MaxRejects, "must be at least 1")
	}
	if f.SnapshotEvery < 1 {
		bad("faults.snapshot_every", f.SnapshotEvery, "must be at least 1")
	}
	S := c.Pipeline.Stages
	for i, e := range f.Events {
		key := fmt.Sprintf("faults.event[%d].", i)
		if e.AtStep < 1 || e.AtStep > c.Run.Steps {
			bad(key+"at_step", e.AtStep, fmt.Sprintf("must be in [1, run.steps = %d]", c.Run.Steps))
		}
		if e.Stage < 0 || e.Stage >= S {
			bad(key+"stage", e.Stage, fmt.Sprintf("must be in [0, pipeline.stages = %d)", S))
		}
		switch e.Kind {
		case "join", "leave":
			if c.Pipeline.ReplicaCount() < 2 {
				bad(key+"kind", strconv.Quote(e.Kind), "needs pipeline.replicas ≥ 2: peers join and leave a swarm's stages (docs/swarm.md)")
			}
			if e.Replica < 0 {
				bad(key+"replica", e.Replica, "must be at least 0")
			}
		case "kill":
			if e.Replica < 0 {
				bad(key+"replica", e.Replica, "must be at least 0")
			}
			if c.Pipeline.Transport != "webrtc" && c.Pipeline.ReplicaCount() < 2 {
				bad(key+"kind", `"kill"`, `needs pipeline.transport = "webrtc" (a killed stage is taken over by a spare peer)`)
			}
		case "lie":
			switch {
			case c.Pipeline.ReplicaCount() < 2:
				bad(key+"kind", `"lie"`, "needs pipeline.replicas ≥ 2: a lie is there to be caught by another replica's spot check (verify.fraction), and with one replica a stage none could check it")
			case e.Stage >= S-1:
				bad(key+"stage", e.Stage, fmt.Sprintf("a lie perturbs a stage's activation outputs, which the last stage does not send: must be in [0, %d)", S-1))
			}
			if e.Replica < 0 {
				bad(key+"replica", e.Replica, "must be at least 0")
			}
			if !(e.Fraction > 0 && e.Fraction <= 1) && !(e.Checks && e.Fraction == 0) {
				bad(key+"fraction", e.Fraction, "must be in (0, 1]: the share of the replica's micro-batches it lies on (0 only with checks = true)")
			}
			if e.Scale == 0 || !finite(e.Scale) || e.Scale <= -1 {
				bad(key+"scale", e.Scale, "must be a non-zero number above -1 (outputs are multiplied by 1+scale; 0.01: 1%)")
			}
		case "cut", "slow", "corrupt":
			if e.Stage >= S-1 {
				bad(key+"stage", e.Stage, fmt.Sprintf("a %s fault acts on the link stage→stage+1: must be in [0, %d)", e.Kind, S-1))
			}
			if e.Frames < 0 || (e.Frames > 0 && e.Kind != "corrupt") {
				bad(key+"frames", e.Frames, "must be 0, or a positive count of frames for a corrupt fault")
			}
			if e.Duration < 0 || !finite(e.Duration) || (e.Duration == 0 && e.Frames == 0) {
				bad(key+"duration", e.Duration, "must be a positive number of seconds (a corrupt fault may give frames instead)")
			}
			if e.BandwidthMbps < 0 || !finite(e.BandwidthMbps) {
				bad(key+"bandwidth_mbps", e.BandwidthMbps, "must be positive (0 = 1 Mbps)")
			}
		default:
			bad(key+"kind", strconv.Quote(e.Kind), "must be kill, cut, slow, corrupt, join, leave or lie")
		}
	}
}
