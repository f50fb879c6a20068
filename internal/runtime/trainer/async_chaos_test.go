package trainer

import (
	"encoding/json"
	"math"
	"path/filepath"
	"testing"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/stages"
)

// Recovery under the async schedule (docs/async.md, "Recovery"): the stages
// are always in the middle of several optimizer steps, so after any failure
// every stage rolls back to the driver's last snapshot and the stream
// restarts there as if it had never stopped (its first forwards on the
// older weight versions the snapshot kept). The order of every update is
// the machine's, so a run with a fault ends with the losses and weights of
// the run without it, to the bit.

// sameBits requires two loss curves to be equal to the bit.
func sameBits(t *testing.T, name string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s logged %d loss values, the clean run %d", name, len(got), len(want))
	}
	for i := range want {
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
			t.Fatalf("%s: loss value %d is %v, the clean run's %v", name, i, got[i], want[i])
		}
	}
}

// TestAsyncFaultsEndAsTheCleanRun: over one process per stage (and once in
// goroutines), a burst of corrupt frames and a link cut mid-stream; each is caught, every stage
// rolls back to the snapshot, and the run ends bit-identical to the clean
// async run in one process, with and without the delay correction.
func TestAsyncFaultsEndAsTheCleanRun(t *testing.T) {
	for _, tc := range []struct {
		name     string
		corr     stages.DelayCorrection
		subspace bool
		inproc   bool // stages in goroutines, not processes
		event    config.FaultEvent
	}{
		// Step 7 lies past the snapshot of step 4, with stages several
		// steps apart: the rollback has to undo applied steps, and the
		// restart needs the older versions (stage 0 stashes, the last
		// stage runs its lag on them).
		{"corrupt/nesterov", stages.DelayNesterov, false, false, config.FaultEvent{AtStep: 7, Kind: "corrupt", Stage: 1, Frames: 3}},
		{"corrupt/none/in-process", stages.DelayNone, false, true, config.FaultEvent{AtStep: 7, Kind: "corrupt", Stage: 2, Frames: 2}},
		{"cut/none", stages.DelayNone, false, false, config.FaultEvent{AtStep: 6, Kind: "cut", Stage: 2, Duration: 1}},
		// The subspace codec keeps the weights (and the iterate) in
		// span(U); the snapshot's versions are such weights.
		{"corrupt/nesterov/subspace", stages.DelayNesterov, true, false, config.FaultEvent{AtStep: 10, Kind: "corrupt", Stage: 0, Frames: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := asyncConfig(t, tc.corr)
			c.Run.Steps = 12
			if tc.subspace {
				c.Compression.Method, c.Compression.Rank = compression.MethodSubspace, 8
			}
			c.Faults.SnapshotEvery = 4
			cleanLoss, clean := stateOf(t, c)

			c.Pipeline.Processes, c.Train.Threads = !tc.inproc, 1
			c.Faults.MaxRejects = 100 // keep the peer: this is about the stream
			c.Faults.PeerTimeout, c.Faults.Heartbeat, c.Faults.LinkTimeout = 20, 0.1, 0.5
			c.Faults.Events = []config.FaultEvent{tc.event}
			dir := t.TempDir()
			sum := runTiny(t, c, dir)
			// A fault may be noticed while the driver gathers a
			// snapshot or evaluates: the stream runs on meanwhile. A
			// cut link can be found just as the stream reaches the
			// snapshot's step (fault log: step 9, rolled back to 8), so
			// the rollback redoes in-flight micro-batches but no whole
			// step: what every fault must leave is a logged fault or a
			// rejected frame, the rollback below, and the clean run's
			// weights.
			if len(sum.FaultLog)+sum.RejectedFrames < 1 {
				t.Fatalf("steps redone %d, rejected frames %d, fault log %+v: the fault went unnoticed", sum.StepsRedone, sum.RejectedFrames, sum.FaultLog)
			}
			k := kindsOf(t, dir)
			if k["rolled_back"] < 1 {
				t.Fatalf("events %v: want a rollback to the snapshot", k)
			}
			got, err := LoadState(filepath.Join(dir, StateFile))
			if err != nil {
				t.Fatal(err)
			}
			sameBits(t, tc.name, losses(t, dir), cleanLoss)
			equalStates(t, clean, got)
			t.Logf("%s: %d rejected frames, %d failures, %d rollbacks, %d steps redone; losses and weights equal the clean run's", tc.name, sum.RejectedFrames, sum.Failures, k["rolled_back"], sum.StepsRedone)
		})
	}
}

// TestAsyncKilledStageIsTakenOverBySpare: the recovery test under
// async: a WebRTC run with 4 stages and a spare; stage 2's peer process is
// SIGKILLed mid-stream. The spare takes the stage over from the snapshot,
// every stage rolls back to it, and the run ends bit-identical to the
// clean async run: the aborted step's in-flight micro-batches were redone.
func TestAsyncKilledStageIsTakenOverBySpare(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five WebRTC peer processes and kills one")
	}
	c := asyncConfig(t, stages.DelayNesterov)
	c.Run.Steps = 12
	c.Faults.SnapshotEvery = 4
	cleanLoss, clean := stateOf(t, c)

	killStage2AtStep7(&c)
	c.Train.Threads = 1
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	if sum.Failures != 1 || sum.Recoveries != 1 || len(sum.FaultLog) != 1 {
		t.Fatalf("failures %d, recoveries %d, log %+v: want the one kill, recovered", sum.Failures, sum.Recoveries, sum.FaultLog)
	}
	f := sum.FaultLog[0]
	if f.Kind != "peer_dead" || f.Stage != 2 || f.ReplacedBy == "" || f.ReplacedBy == f.Peer {
		t.Errorf("fault %+v: want stage 2's peer dead and replaced by the spare", f)
	}
	if f.RolledBackTo != 4 {
		t.Errorf("rolled back to step %d, want the snapshot at 4", f.RolledBackTo)
	}
	got, err := LoadState(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	sameBits(t, "killed", losses(t, dir), cleanLoss)
	equalStates(t, clean, got)
	js, _ := json.Marshal(f)
	t.Logf("kill at step 7: %s; losses and weights equal the clean run's", js)
}
