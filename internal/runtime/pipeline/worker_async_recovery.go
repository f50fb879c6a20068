package pipeline

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/narrowband/narrowband/stages"
)

// Recovery under the async schedule (docs/async.md, "Recovery"): after an
// abort the stream is abandoned; a restore brings the state to restart
// from and, for a snapshot, the older weight versions the restart's first
// forwards run on (scheduler.NewAsyncMachineAt), which the stages kept for
// it while training (keepsPast) and sent with the snapshot.

// asyncRestart is what a restore leaves for the next stream to start
// from: the stream's origin, the older weight versions its refill runs on
// (History), by version.
type asyncRestart struct {
	origin int
	hist   map[int][][]float32
}

// keepsPast reports whether version v, about to be overwritten or
// dropped, is one a coming snapshot's restart will run forwards on again:
// v is in HistoryAt(k) of a snapshot step k whose copy is not taken yet
// (k-1 ≥ after, the next step to be held).
func (a *asyncRun) keepsPast(v, after int) bool {
	d := (a.m.MaxInFlight() - 1 + a.m.Lag() + a.spec.Micro - 1) / a.spec.Micro
	for k := v + 1; k <= v+d+1; k++ {
		if k-1 >= after && a.snapAt(k) && slices.Contains(a.m.HistoryAt(k), v) {
			return true
		}
	}
	return false
}

// The names of a snapshot's extra tensors: weight versions and the live
// weights. They never go into a checkpoint (Driver.State leaves them out).
const (
	asyncPrefix        = "async."
	asyncVersionPrefix = "async.v"
	asyncLivePrefix    = "async.live."
)

// asyncRestore loads a state (a checkpoint, or the snapshot recovery rolls
// back to) and leaves the restart for the next step command: the stream's
// origin (m.Origin) and the weight versions the snapshot holds.
func (w *Worker) asyncRestore(m ctrlMsg) (ctrlMsg, error) {
	ts, err := decodeTensors(m.blob)
	if err != nil {
		return ctrlMsg{}, err
	}
	ps := w.st.Params()
	index := map[string]int{}
	for k, p := range ps {
		index[p.Name] = k
	}
	r := &asyncRestart{origin: m.Origin, hist: map[int][][]float32{}}
	var live [][]float32
	var rest []stages.Tensor
	take := func(dst *[][]float32, name string, t stages.Tensor) error {
		k, ok := index[name]
		if !ok {
			return nil // another stage's
		}
		if len(t.Data) != len(ps[k].Data) {
			return fmt.Errorf("restore: %s has %d values, the stage's %s %d", t.Name, len(t.Data), name, len(ps[k].Data))
		}
		if *dst == nil {
			*dst = make([][]float32, len(ps))
		}
		(*dst)[k] = t.Data
		return nil
	}
	for _, t := range ts {
		switch {
		case strings.HasPrefix(t.Name, asyncLivePrefix):
			if err := take(&live, strings.TrimPrefix(t.Name, asyncLivePrefix), t); err != nil {
				return ctrlMsg{}, err
			}
		case strings.HasPrefix(t.Name, asyncVersionPrefix):
			vs, name, ok := strings.Cut(strings.TrimPrefix(t.Name, asyncVersionPrefix), ".")
			v, err := strconv.Atoi(vs)
			if !ok || err != nil || v < m.Origin {
				return ctrlMsg{}, fmt.Errorf("restore: tensor %q: want %s<version>.<param> with a version from the stream's origin up", t.Name, asyncVersionPrefix)
			}
			h := r.hist[v]
			if err := take(&h, name, t); err != nil {
				return ctrlMsg{}, err
			}
			if h != nil { // nil: none of this stage's params yet
				r.hist[v] = h
			}
		case strings.HasPrefix(t.Name, asyncPrefix):
			return ctrlMsg{}, fmt.Errorf("restore: unknown tensor %q", t.Name)
		default:
			rest = append(rest, t)
		}
	}
	for v, h := range r.hist {
		for k := range h {
			if h[k] == nil {
				return ctrlMsg{}, fmt.Errorf("restore: weight version %d lacks %s", v, ps[k].Name)
			}
		}
	}
	st := &stages.State{Model: w.st.Config(), OptimStep: m.OptimStep, Tensors: rest}
	if err := st.RestoreStage(w.st, w.opt); err != nil {
		return ctrlMsg{}, err
	}
	if live != nil {
		for k, p := range ps {
			if live[k] == nil {
				return ctrlMsg{}, fmt.Errorf("restore: the live weights lack %s", p.Name)
			}
			copy(p.Data, live[k])
		}
	}
	w.started = false
	w.asy.begun, w.asy.restart = false, r
	return ctrlMsg{Kind: ctrlOK}, nil
}

// abandon drops the stream after an abort: the pipe, received tensors and
// gradients. The weights are somewhere in the middle of several steps, so
// the stream cannot go on until a restore (Membership.Async: every
// recovery restores the snapshot).
func (a *asyncRun) abandon(w *Worker) {
	a.useWeights(w.st, nil)
	a.reset(a.m)
	a.begun, a.stale, a.restart = false, true, nil
}
