package trainer

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
)

// swarmConfig is a 2 stages × 2 replicas run of the tiny model, long
// enough for a join, a leave and a death.
func swarmConfig(t *testing.T) config.Config {
	c := tinyConfig(t)
	c.Run.Steps = 16
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Train.EvalInterval = 8
	c.Pipeline.Stages = 2
	c.Pipeline.Replicas = 2
	c.Faults.PeerTimeout = 4
	return c
}

// events reads the run's metrics events of the given kinds.
func events(t *testing.T, dir string, kinds ...string) []metrics.Event {
	t.Helper()
	all, err := metrics.ReadEvents(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []metrics.Event
	for _, ev := range all {
		if slices.Contains(kinds, ev.Kind) {
			out = append(out, ev)
		}
	}
	return out
}

func stepRecords(t *testing.T, dir string) []metrics.StepRecord {
	t.Helper()
	recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestSwarmChurn: a peer joins a running 2 × 2 swarm in goroutines at step
// 3 (it downloads its stage's state from a live replica while the others
// train, and is admitted at a step boundary with the replicas' state bit
// for bit: the driver checks its digest), a replica leaves cleanly at
// step 7 and another is killed mid-step at step 11. The run completes
// every step, nothing rolls back, the summary counts each, and the final
// held-out loss is within 2% of the same run without the events.
func TestSwarmChurn(t *testing.T) { swarmChurn(t, swarmConfig(t)) }

// TestSwarmChurnOverWebRTC is TestSwarmChurn on WebRTC peer processes:
// the joiner is a new process, linked to its neighbours by new ICE
// sessions; the killed replica is SIGKILLed; the one that leaves exits.
func TestSwarmChurnOverWebRTC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five WebRTC peer processes")
	}
	c := swarmConfig(t)
	c.Pipeline.Transport = "webrtc"
	c.Train.Threads = 1
	swarmChurn(t, c)
}

func swarmChurn(t *testing.T, c config.Config) {
	calm := runTiny(t, c, t.TempDir())
	c.Faults.Events = []config.FaultEvent{
		{AtStep: 3, Kind: "join"},
		{AtStep: 7, Kind: "leave", Stage: 0, Replica: 1},
		{AtStep: 11, Kind: "kill", Stage: 1, Replica: 0},
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	s := sum.Swarm
	if s == nil {
		t.Fatal("no swarm counts in the summary")
	}
	t.Logf("swarm: %+v; calm %.4f, churn %.4f", *s, calm.FinalValLoss, sum.FinalValLoss)
	if s.Joins != 1 || s.Leaves != 1 || s.Deaths != 1 || s.Rollbacks != 0 {
		t.Errorf("joins %d, leaves %d, deaths %d, rollbacks %d; want 1, 1, 1, 0", s.Joins, s.Leaves, s.Deaths, s.Rollbacks)
	}
	if s.StateDownloadBytes <= 0 || s.StateDownloadSeconds <= 0 {
		t.Errorf("state download: %d bytes in %g s", s.StateDownloadBytes, s.StateDownloadSeconds)
	}
	if rel := math.Abs(sum.FinalValLoss-calm.FinalValLoss) / calm.FinalValLoss; rel > 0.02 {
		t.Errorf("final held-out loss %.4f with churn, %.4f without: %.1f%% apart, want within 2%%", sum.FinalValLoss, calm.FinalValLoss, 100*rel)
	}
	if got := events(t, dir, "rolled_back"); len(got) != 0 {
		t.Errorf("%d rollbacks: a swarm that lost one of several replicas must not roll back", len(got))
	}
	for _, k := range []string{"replica_joining", "state_download", "replica_joined", "replica_leaving", "replica_left", "replica_dead"} {
		if len(events(t, dir, k)) != 1 {
			t.Errorf("want one %s event, got %d", k, len(events(t, dir, k)))
		}
	}
	recs := stepRecords(t, dir)
	if len(recs) != c.Run.Steps {
		t.Fatalf("%d step records, want %d", len(recs), c.Run.Steps)
	}
	for _, r := range recs {
		n := [2]int{}
		for _, st := range r.Stages {
			n[st.Stage] += st.MicroBatches
		}
		if n != [2]int{4, 4} {
			t.Errorf("step %d: micro-batches per stage %v, want 4 on each", r.Step, n)
		}
	}
}

// TestJoinWhileSourceIsKilled: a peer joins a 1 stage × 3 replicas swarm
// on 4 Mbps links, so that its download takes several steps, and the
// replica it downloads from is killed mid-download. The replica is lost
// without a rollback, the download starts again from another replica,
// and the joiner is admitted with its digest checked against its new
// source. (Three replicas, not two: a lone replica sums with nobody and
// steps faster than a 4 Mbps link carries a step to replay, so a joiner
// could never catch up; docs/swarm.md, "Joining".)
func TestJoinWhileSourceIsKilled(t *testing.T) {
	c := swarmConfig(t)
	c.Run.Steps = 12
	c.Train.MicroBatches = 6
	c.Train.BatchSize = 12
	c.Pipeline.Stages = 1
	c.Pipeline.Replicas = 3
	c.Network.BandwidthMbps = 4
	c.Faults.Events = []config.FaultEvent{
		{AtStep: 3, Kind: "join"},
		{AtStep: 4, Kind: "kill", Stage: 0, Replica: 0},
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	s := sum.Swarm
	t.Logf("swarm: %+v; deaths %v", *s, events(t, dir, "replica_dead"))
	if s.Joins != 1 || s.Deaths != 1 || s.Rollbacks != 0 {
		t.Errorf("joins %d, deaths %d, rollbacks %d; want 1, 1, 0", s.Joins, s.Deaths, s.Rollbacks)
	}
	if s.DownloadRestarts < 1 {
		t.Errorf("the download was never restarted: its source was killed after it had finished (%g s)", s.StateDownloadSeconds)
	}
	join := events(t, dir, "replica_joining")
	dead := events(t, dir, "replica_dead")
	if len(join) < 2 || len(dead) != 1 || join[0].Detail["from"] != dead[0].Detail["peer"] || join[1].Detail["from"] == dead[0].Detail["peer"] {
		t.Errorf("downloads %v, death %v: want the first from the replica that died, the next from the other", join, dead)
	}
}

// TestSwarmLastReplicaLost: a stage that loses its last replica ends the
// run with an error that says so, not a hang nor a hand-over the swarm
// cannot carry out.
func TestSwarmLastReplicaLost(t *testing.T) {
	c := swarmConfig(t)
	c.Faults.Events = []config.FaultEvent{
		{AtStep: 3, Kind: "kill", Stage: 1, Replica: 0},
		{AtStep: 6, Kind: "kill", Stage: 1, Replica: 0},
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err := Run(context.Background(), Options{Config: c, Out: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "last replica") {
		t.Fatalf("got %v, want the run ended by the loss of stage 1's last replica", err)
	}
}
