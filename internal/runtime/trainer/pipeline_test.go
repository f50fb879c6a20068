package trainer

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/scheduler"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/stages"
)

// sameLosses fails t unless two loss curves have the same length and every
// value agrees within 1e-5 relative: an engine or transport changes
// nothing but time.
func sameLosses(t *testing.T, name string, got []float64, refName string, ref []float64) {
	t.Helper()
	if len(got) != len(ref) {
		t.Fatalf("%s logged %d loss values, %s %d", name, len(got), refName, len(ref))
	}
	for i := range ref {
		if d := math.Abs(got[i]-ref[i]) / math.Abs(ref[i]); d > 1e-5 {
			t.Errorf("loss value %d: %s %v, %s %v (relative %.2g)", i, name, got[i], refName, ref[i], d)
		}
	}
}

// stateOf runs c and returns its loss curve and final state.
func stateOf(t *testing.T, c config.Config) ([]float64, *stages.State) {
	t.Helper()
	dir := t.TempDir()
	runTiny(t, c, dir)
	st, err := LoadState(dir + "/" + StateFile)
	if err != nil {
		t.Fatal(err)
	}
	return losses(t, dir), st
}

// TestPipelineEqualsOneProcess: with no compression, cutting the model into
// 2 or 4 stages under GPipe or 1F1B changes nothing but the order of
// floating-point additions: losses and final weights match one process.
func TestPipelineEqualsOneProcess(t *testing.T) {
	c := tinyConfig(t)
	c.Run.Steps = 20
	c.Model.NLayer = 4
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Train.EvalInterval = 10
	refLoss, ref := stateOf(t, c)
	for _, S := range []int{2, 4} {
		for _, sched := range []scheduler.Schedule{scheduler.GPipe, scheduler.OneFOneB} {
			t.Run(fmt.Sprintf("stages=%d/schedule=%v", S, sched), func(t *testing.T) {
				p := c
				p.Pipeline.Stages = S
				p.Pipeline.Schedule = sched
				if sched == scheduler.OneFOneB && S == 4 {
					p.Pipeline.Lookahead = 2 // more warm-up forwards, same math
				}
				gotLoss, got := stateOf(t, p)
				sameLosses(t, "pipeline", gotLoss, "one process", refLoss)
				compareStates(t, ref, got, 1e-5)
			})
		}
	}
}

// compareStates checks the final weights of got against want. The whole
// parameter vector must be within tol (relative L2 distance), and so must
// every tensor, up to a factor of 10: the attention key bias has a gradient
// that is zero in exact arithmetic (softmax ignores a shift shared by all
// keys), so what it gets is rounding noise, which AdamW normalizes into
// full-size steps; a different (equally valid) order of additions gives it
// different noise, a few 1e-5 apart after 20 steps.
func compareStates(t *testing.T, want, got *stages.State, tol float64) {
	t.Helper()
	byName := map[string][]float32{}
	for _, ts := range got.Tensors {
		byName[ts.Name] = ts.Data
	}
	n := 0
	var allDiff, allNorm float64
	for _, w := range want.Tensors {
		if len(w.Name) > 6 && w.Name[:6] == "optim." {
			continue
		}
		g, ok := byName[w.Name]
		if !ok {
			t.Errorf("%s missing from the pipeline's state", w.Name)
			continue
		}
		var diff, norm float64
		for i := range w.Data {
			d := float64(w.Data[i]) - float64(g[i])
			diff += d * d
			norm += float64(w.Data[i]) * float64(w.Data[i])
		}
		allDiff += diff
		allNorm += norm
		// Per tensor the bar is 100× the whole model's: a small tensor
		// (a 96-value bias) whose gradient elements sit near zero turns
		// reassociation noise into different AdamW steps (g/√v is ±1
		// whatever g's size), so after a few steps it differs by ~1e-4
		// relative when the model differs by ~5e-7; a tensor that is
		// really wrong (not summed, not exchanged) is off by far more.
		if rel := math.Sqrt(diff / math.Max(norm, 1e-30)); rel > 100*tol {
			t.Errorf("%s: relative distance %.3g > %g (norm %.3g, distance %.3g)", w.Name, rel, 100*tol, math.Sqrt(norm), math.Sqrt(diff))
		}
		n++
	}
	if n == 0 {
		t.Fatal("no weights compared")
	}
	rel := math.Sqrt(allDiff / allNorm)
	t.Logf("final weights: relative L2 distance %.3g over %d tensors", rel, n)
	if rel > tol {
		t.Errorf("final weights: relative distance %.3g > %g", rel, tol)
	}
}

// TestPipelineResume: a pipeline run resumes from its checkpoint exactly.
func TestPipelineResume(t *testing.T) {
	c := tinyConfig(t)
	c.Model.NLayer = 2
	c.Pipeline.Stages = 2
	whole := t.TempDir()
	runTiny(t, c, whole)
	c.Train.CheckpointInterval = 3
	broken := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := Run(ctx, Options{Config: c, Out: broken, Observer: &stopAfter{n: 4, cancel: cancel}}); err == nil {
		t.Fatal("interrupted run reported success")
	}
	if _, err := Run(context.Background(), Options{Config: c, Out: broken, Resume: broken}); err != nil {
		t.Fatal(err)
	}
	lw, lr := losses(t, whole), losses(t, broken)
	for i := range lw {
		if math.Float64bits(lw[i]) != math.Float64bits(lr[i]) {
			t.Fatalf("value %d: resumed %v, uninterrupted %v", i, lr[i], lw[i])
		}
	}
}

// TestProcessesEqualInProcess: one OS process per stage, linked by real
// sockets, trains exactly like the same pipeline in goroutines.
func TestProcessesEqualInProcess(t *testing.T) {
	c := tinyConfig(t)
	c.Model.NLayer = 4
	c.Pipeline.Stages = 4
	c.Train.MicroBatches = 2
	inLoss, inState := stateOf(t, c)
	c.Pipeline.Processes = true
	c.Train.Threads = 1
	prLoss, prState := stateOf(t, c)
	sameLosses(t, "processes", prLoss, "goroutines", inLoss)
	compareStates(t, inState, prState, 1e-5)
}

// TestWebRTCEqualsInProcess: four peer processes that met through a real
// signaling server and talk over WebRTC data channels on loopback train
// exactly like the in-process pipeline: the transport changes nothing but
// time.
func TestWebRTCEqualsInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four WebRTC peer processes")
	}
	c := tinyConfig(t)
	c.Model.NLayer = 4
	c.Pipeline.Stages = 4
	c.Train.MicroBatches = 2
	inLoss, inState := stateOf(t, c)
	c.Pipeline.Transport = "webrtc"
	c.Train.Threads = 1
	dir := t.TempDir()
	runTiny(t, c, dir)
	rtLoss := losses(t, dir)
	rtState, err := LoadState(dir + "/" + StateFile)
	if err != nil {
		t.Fatal(err)
	}
	sameLosses(t, "webrtc", rtLoss, "in-process", inLoss)
	compareStates(t, inState, rtState, 1e-5)
	recs, err := metrics.ReadJSONL(dir + "/metrics.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	last := recs[len(recs)-1]
	if len(last.Links) != 3 {
		t.Fatalf("last step reports %d links, want 3", len(last.Links))
	}
	for _, l := range last.Links {
		if l.Candidate != "host" {
			t.Errorf("link %d→%d used candidate %q, want host on loopback", l.From, l.To, l.Candidate)
		}
	}
}

// TestWebRTCRunRelaysThroughItsOwnTURN: a run that hosts STUN/TURN beside its
// signaling server (pipeline.turn_addr) and allows relayed paths only
// trains through that relay without being told its address, and the
// transport still changes nothing but time.
func TestWebRTCRunRelaysThroughItsOwnTURN(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two WebRTC peer processes and a TURN server")
	}
	c := tinyConfig(t)
	c.Pipeline.Stages = 2
	c.Train.MicroBatches = 2
	inLoss, _ := stateOf(t, c)
	c.Pipeline.Transport = "webrtc"
	c.Pipeline.TURNAddr = "127.0.0.1:0"
	c.Pipeline.RelayOnly = true
	c.Train.Threads = 1
	dir := t.TempDir()
	runTiny(t, c, dir)
	sameLosses(t, "relayed", losses(t, dir), "in-process", inLoss)
	recs, err := metrics.ReadJSONL(dir + "/metrics.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	last := recs[len(recs)-1]
	if len(last.Links) != 1 || last.Links[0].Candidate != "relay" {
		t.Fatalf("last step's links %+v, want one link through a relay", last.Links)
	}
	b, err := os.ReadFile(dir + "/signal.json")
	if err != nil {
		t.Fatal(err)
	}
	var sig map[string]string
	if err := json.Unmarshal(b, &sig); err != nil {
		t.Fatal(err)
	}
	if j := sig["join"]; !strings.Contains(j, " --ice turn:127.0.0.1:") || !strings.Contains(j, " --relay-only") {
		t.Errorf("join command %q does not name the run's TURN server and --relay-only", j)
	}
}

// TestLlamaPipelineEqualsOneProcess: the Llama family, with tied and with
// untied embeddings (the last stage then trains its own lm_head and the
// ends exchange no tied gradient), cut into 2 and 4 stages, in goroutines
// and in processes, trains like one process.
func TestLlamaPipelineEqualsOneProcess(t *testing.T) {
	c := tinyConfig(t)
	c.Run.Steps = 12
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Train.EvalInterval = 6
	m := stages.DefaultLlamaConfig()
	m.NLayer, m.NHead, m.NKVHead, m.NEmbd, m.BlockSize, m.IntermediateSize = 4, c.Model.NHead, c.Model.NHead/2, c.Model.NEmbd, c.Model.BlockSize, 3*c.Model.NEmbd
	c.Model = m
	for _, untied := range []bool{false, true} {
		u := c
		u.Model.UntiedEmbeddings = untied
		refLoss, ref := stateOf(t, u)
		if untied && !hasTensor(ref, "lm_head.weight") {
			t.Fatal("an untied Llama's state has no lm_head.weight")
		}
		for _, S := range []int{2, 4} {
			for _, processes := range []bool{false, true} {
				if processes && S == 2 {
					continue
				}
				t.Run(fmt.Sprintf("untied=%v/stages=%d/processes=%v", untied, S, processes), func(t *testing.T) {
					p := u
					p.Pipeline.Stages = S
					p.Pipeline.Schedule = scheduler.OneFOneB
					if processes {
						p.Pipeline.Processes, p.Train.Threads = true, 1
					}
					gotLoss, got := stateOf(t, p)
					sameLosses(t, "pipeline", gotLoss, "one process", refLoss)
					compareStates(t, ref, got, 1e-5)
				})
			}
		}
	}
}

func hasTensor(st *stages.State, name string) bool {
	for _, ts := range st.Tensors {
		if ts.Name == name {
			return true
		}
	}
	return false
}

// TestStageProcessesReportTheirMemory: a run whose stages have processes
// of their own puts each process's plan and peak RSS in summary.json, so
// the printed plan can be held against what the machines really used; an
// in-process run has one process and reports no per-stage peak.
func TestStageProcessesReportTheirMemory(t *testing.T) {
	c := tinyConfig(t)
	c.Pipeline.Stages = 2
	sum := runTiny(t, c, t.TempDir())
	if len(sum.Memory) != 2 {
		t.Fatalf("in-process run: %d memory entries, want 2", len(sum.Memory))
	}
	for _, m := range sum.Memory {
		if m.PlannedBytes <= 0 || m.PeakRSSBytes != 0 || m.ProcessBytes != 0 {
			t.Errorf("in-process stage %d: %+v, want a plan and no process figures", m.Stage, m)
		}
	}
	c.Pipeline.Processes, c.Train.Threads = true, 1
	sum = runTiny(t, c, t.TempDir())
	for _, m := range sum.Memory {
		if m.PeakRSSBytes <= 0 || m.ProcessBytes <= m.PlannedBytes || m.PeakOverPlan <= 0 {
			t.Errorf("stage process %d: %+v, want its plan, its peak RSS and their ratio", m.Stage, m)
		}
		t.Logf("stage %d: planned %.1f MB (process %.1f MB), peak RSS %.1f MB", m.Stage, float64(m.PlannedBytes)/1e6, float64(m.ProcessBytes)/1e6, float64(m.PeakRSSBytes)/1e6)
	}
}

// asyncConfig is a 4-stage async pipeline deep enough that stage 0 keeps
// stashed versions, the last stage's gradients wait the lag, and stages
// run more than a step apart.
func asyncConfig(t *testing.T, corr stages.DelayCorrection) config.Config {
	c := tinyConfig(t)
	c.Run.Steps = 10
	c.Model.NLayer = 4
	c.Pipeline.Stages = 4
	c.Pipeline.Schedule = scheduler.Async
	c.Pipeline.InFlight = 2
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Train.EvalInterval = 5 // an evaluation while the stream runs
	c.Train.DelayCorrection = corr
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAsyncPipelineDeterministic: the async schedule orders every update
// itself, so two in-process runs give the same losses and weights bit for
// bit, whatever the goroutines' timing; it trains (the loss falls), and it
// differs from 1F1B (the gradients really are stale).
func TestAsyncPipelineDeterministic(t *testing.T) {
	for _, corr := range []stages.DelayCorrection{stages.DelayNone, stages.DelayNesterov} {
		t.Run("correction="+corr.String(), func(t *testing.T) {
			c := asyncConfig(t, corr)
			l1, s1 := stateOf(t, c)
			l2, s2 := stateOf(t, c)
			for i := range l1 {
				if math.Float64bits(l1[i]) != math.Float64bits(l2[i]) {
					t.Fatalf("value %d: %v then %v", i, l1[i], l2[i])
				}
			}
			compareStates(t, s1, s2, 0)
			sync := c
			sync.Pipeline.Schedule, sync.Pipeline.InFlight, sync.Train.DelayCorrection = scheduler.OneFOneB, 0, stages.DelayNone
			ls, _ := stateOf(t, sync)
			t.Logf("losses: async %v, 1f1b %v", l1, ls)
			if l1[len(l1)-1] >= l1[0] {
				t.Errorf("async loss %v → %v: did not fall", l1[0], l1[len(l1)-1])
			}
			if math.Float64bits(l1[len(l1)-1]) == math.Float64bits(ls[len(ls)-1]) {
				t.Error("async ended on 1F1B's loss to the bit: are the gradients stale at all?")
			}
		})
	}
}

// TestAsyncTransportsEqualInProcess: the async machine sets the order of
// every update, so async over one process per stage (loopback TCP) and over
// WebRTC data channels trains exactly like async in goroutines, with and
// without the delay correction, and with the subspace codec (no state
// across messages).
func TestAsyncTransportsEqualInProcess(t *testing.T) {
	for _, tc := range []struct {
		name      string
		corr      stages.DelayCorrection
		transport string
		processes bool
		subspace  bool
	}{
		{"processes/none", stages.DelayNone, "inproc", true, false},
		{"processes/nesterov", stages.DelayNesterov, "inproc", true, false},
		{"processes/subspace", stages.DelayNone, "inproc", true, true},
		{"webrtc/nesterov", stages.DelayNesterov, "webrtc", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.transport == "webrtc" && testing.Short() {
				t.Skip("starts four WebRTC peer processes")
			}
			c := asyncConfig(t, tc.corr)
			if tc.subspace {
				c.Compression.Method = compression.MethodSubspace
				c.Compression.Rank = 8
			}
			inLoss, inState := stateOf(t, c)
			c.Pipeline.Transport, c.Pipeline.Processes, c.Train.Threads = tc.transport, tc.processes, 1
			gotLoss, gotState := stateOf(t, c)
			sameLosses(t, tc.name, gotLoss, "in-process", inLoss)
			compareStates(t, inState, gotState, 1e-5)
		})
	}
}

// TestAsyncResume: an interrupted async run resumes from its checkpoint
// (every stage restarts the stream at the checkpoint's step with an empty
// pipe) and finishes; up to the checkpoint it is the uninterrupted run.
func TestAsyncResume(t *testing.T) {
	c := asyncConfig(t, stages.DelayNesterov)
	c.Train.EvalInterval = 0
	whole := t.TempDir()
	runTiny(t, c, whole)
	c.Train.CheckpointInterval = 3
	broken := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := Run(ctx, Options{Config: c, Out: broken, Observer: &stopAfter{n: 4, cancel: cancel}}); err == nil {
		t.Fatal("interrupted run reported success")
	}
	if _, err := Run(context.Background(), Options{Config: c, Out: broken, Resume: broken}); err != nil {
		t.Fatal(err)
	}
	lw, lr := losses(t, whole), losses(t, broken)
	if len(lr) != len(lw) {
		t.Fatalf("resumed run logged %d values, uninterrupted %d", len(lr), len(lw))
	}
	for i := range 3 {
		if math.Float64bits(lw[i]) != math.Float64bits(lr[i]) {
			t.Fatalf("step %d, before the checkpoint: resumed %v, uninterrupted %v", i+1, lr[i], lw[i])
		}
	}
	t.Logf("final loss: resumed %v, uninterrupted %v (the pipe refills after a resume)", lr[len(lr)-1], lw[len(lw)-1])
}
