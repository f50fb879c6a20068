package trainer

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// TestAsyncTimelineNamesWeightVersions: an async run's timeline (what the
// web view draws) says which weight version each forward and backward ran
// on: a backward names its forward's version, the versions are the
// machine's (VersionOf: several versions in flight at once on stage 0),
// and the stashes and drops that keep them are there.
func TestAsyncTimelineNamesWeightVersions(t *testing.T) {
	c := asyncConfig(t, stages.DelayNone)
	c.Run.Steps = 8
	dir := t.TempDir()
	runTiny(t, c, dir)
	f, err := os.Open(filepath.Join(dir, "timeline.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type key struct{ stage, of, micro int }
	fwd := map[key]int{}
	var bwds []metrics.Span
	kinds := map[string]int{}
	versions := map[int]bool{} // stage 0's forwards
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s metrics.Span
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		kinds[s.Kind]++
		switch s.Kind {
		case "forward", "backward", "stash", "drop", "optimizer":
			if s.Version == nil || s.Of < 1 {
				t.Fatalf("async %s span %+v names no weight version or step", s.Kind, s)
			}
		}
		switch s.Kind {
		case "forward":
			fwd[key{s.Stage, s.Of, s.Micro}] = *s.Version
			spec := scheduler.Pipeline{Schedule: scheduler.Async, Stages: c.Pipeline.Stages, Micro: c.Train.MicroBatches, InFlight: c.Pipeline.InFlight}
			m, err := scheduler.NewAsyncMachine(spec, s.Stage, c.Run.Steps)
			if err != nil {
				t.Fatal(err)
			}
			if want := m.VersionOf((s.Of-1)*c.Train.MicroBatches + s.Micro); *s.Version != want {
				t.Errorf("stage %d forward of step %d micro %d shown on v%d, the machine ran it on v%d", s.Stage, s.Of, s.Micro, *s.Version, want)
			}
			if s.Stage == 0 {
				versions[*s.Version] = true
			}
		case "backward":
			bwds = append(bwds, s)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	pairs := 0
	for _, b := range bwds {
		v, ok := fwd[key{b.Stage, b.Of, b.Micro}]
		if !ok {
			continue // its forward was before the timeline's window
		}
		pairs++
		if *b.Version != v {
			t.Errorf("stage %d backward of step %d micro %d shown on v%d, its forward on v%d", b.Stage, b.Of, b.Micro, *b.Version, v)
		}
	}
	if pairs < 20 || len(versions) < 2 || kinds["stash"] == 0 || kinds["drop"] == 0 {
		t.Errorf("%d forward/backward pairs, %d versions among stage 0's forwards, spans %v: want many pairs, several versions, stashes and drops", pairs, len(versions), kinds)
	}
	t.Logf("%d forward/backward pairs with their versions; span kinds %v", pairs, kinds)
}

// TestAsyncSubspaceEvaluatesWhatItSaves: with the subspace codec and the
// Nesterov correction, the held-out loss an async run reports (its stages
// evaluating their iterates through the codec) is the loss of the model
// it saves, evaluated in one process without any codec: the iterate, not
// only the look-ahead the forwards run on, stays in span(U).
func TestAsyncSubspaceEvaluatesWhatItSaves(t *testing.T) {
	c := asyncConfig(t, stages.DelayNesterov)
	c.Compression.Method, c.Compression.Rank = compression.MethodSubspace, 8
	c.Train.EvalInterval = 0
	dir := t.TempDir()
	sum := runTiny(t, c, dir)
	corpus, err := data.Load(context.Background(), data.Options{Paths: c.Data.Path, ValFraction: c.Data.ValFraction, MinTokens: c.Model.BlockSize + 1})
	if err != nil {
		t.Fatal(err)
	}
	var text []int32
	for _, w := range data.EvalWindows(corpus.Val, uint64(c.Run.Seed), c.Train.EvalBatches*c.Train.BatchSize, c.Model.BlockSize) {
		text = append(text, w...)
	}
	st, err := stages.LoadModel(filepath.Join(dir, CheckpointFile), 3)
	if err != nil {
		t.Fatal(err)
	}
	got, err := stages.EvalLoss(context.Background(), st, 0, 3, data.Chunks(text, c.Model.BlockSize))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-sum.FinalValLoss) > 1e-5*sum.FinalValLoss {
		t.Fatalf("the saved model evaluates to %v on the held-out windows; the run reported %v", got, sum.FinalValLoss)
	}
}
