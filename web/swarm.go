package web

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/narrowband/narrowband/internal/metrics"
)

// The swarm is who holds each stage's replicas and what each is doing:
// joining, syncing (downloading a live replica's state), training or
// leaving. The page shows it as one column of cards per stage.
//
// The server keeps it, not the page, because its sources are spread over
// the whole run: a replica that joined at step 3 of a long run is named by
// an event the bounded event ring has long dropped, yet a tab opened at
// step 5000 must show it as training. So every step record, replica event
// and peer list is folded into one small state (a card per replica and a
// short list of departures), sent whole in the snapshot and again as a
// "swarm" frame whenever it changes. The rates on the cards (compute,
// sends, averaging traffic) are not part of it: the page computes them
// from the recent step records it already has.
//
// Sources, weakest first:
//   - the peer list (SetPeers): an active peer holding a stage that no
//     record or event has named yet is "joining"; the list also gives each
//     peer's own path (its candidate type);
//   - step records: a peer in a record's stages is a replica of that
//     stage, "training" if nothing else said otherwise;
//   - replica events (docs/swarm.md), which set the state outright:
//     replica_joining → syncing, state_download → its download done,
//     replica_joined → training, replica_leaving → leaving,
//     replica_left/replica_dropped/replica_dead → gone (kept in the list of
//     departures), replica_demoted → marked slow.

// replicaState is what a replica of a stage is doing. The zero value means
// nothing said.
type replicaState int

// Replica states, in the order a replica goes through them.
const (
	replicaUnknown  replicaState = iota
	replicaJoining               // known (in the peer list), not yet syncing
	replicaSyncing               // downloading a live replica's state
	replicaTraining              // computing its share of every step
	replicaLeaving               // asked to leave, finishing its step
)

func (s replicaState) String() string {
	switch s {
	case replicaUnknown:
		return "unknown"
	case replicaJoining:
		return "joining"
	case replicaSyncing:
		return "syncing"
	case replicaTraining:
		return "training"
	case replicaLeaving:
		return "leaving"
	}
	return fmt.Sprintf("replicaState(%d)", int(s))
}

// maxDepartures is how many departed replicas the swarm remembers (the
// page shows the latest few of each stage, faded).
const maxDepartures = 32

// replica is one card of the swarm.
type replica struct {
	stage int
	peer  string
	state replicaState
	since int // step at which it entered state
	from  string
	// The state download, once state_download named it.
	downloaded      bool
	dlBytes         int64
	dlSeconds       float64
	dlResumed       int
	demoted         bool
	demotedReason   string
	listedOnly      bool // known from the peer list alone
	candidateListed string
}

// departure is a replica that left the swarm.
type departure struct {
	stage  int
	peer   string
	kind   string // the event: replica_left, replica_dropped or replica_dead
	reason string
	step   int
}

// swarm is the state machine; Server calls it with s.mu held.
type swarm struct {
	replicas   []replica         // in order of arrival; the page groups them by stage
	gone       []departure       // the latest maxDepartures, oldest first
	candidates map[string]string // peer → its candidate type, from the peer list
	// shown turns true once a stage has had two replicas or a replica
	// event arrived, and stays true: a swarm that shrinks to one replica
	// a stage is still a swarm to watch.
	shown bool
}

func newSwarm() swarm {
	return swarm{candidates: map[string]string{}}
}

// goneAt is the step of peer's latest departure.
func (w *swarm) goneAt(peer string) (int, bool) {
	for i := len(w.gone) - 1; i >= 0; i-- {
		if w.gone[i].peer == peer {
			return w.gone[i].step, true
		}
	}
	return 0, false
}

func (w *swarm) find(peer string) int {
	for i := range w.replicas {
		if w.replicas[i].peer == peer {
			return i
		}
	}
	return -1
}

// checkShown sets shown when some stage has more than one replica.
func (w *swarm) checkShown() {
	if w.shown {
		return
	}
	seen := map[int]bool{}
	for _, r := range w.replicas {
		if seen[r.stage] {
			w.shown = true
			return
		}
		seen[r.stage] = true
	}
}

// step folds in a step record and reports whether the swarm changed. A
// stage entry without a peer name is the coordinator's own stage and no
// replica of a swarm. A peer that departed is not brought back by the
// records of the steps up to its departure.
func (w *swarm) step(r *metrics.StepRecord) bool {
	changed := false
	for i := range r.Stages {
		st := &r.Stages[i]
		if st.Peer == "" {
			continue
		}
		k := w.find(st.Peer)
		if k < 0 {
			if at, ok := w.goneAt(st.Peer); ok && r.Step <= at {
				continue
			}
			w.replicas = append(w.replicas, replica{stage: st.Stage, peer: st.Peer, state: replicaTraining, since: r.Step})
			changed = true
			continue
		}
		rp := &w.replicas[k]
		rp.listedOnly = false
		if rp.state == replicaJoining || rp.state == replicaUnknown {
			rp.state, rp.since = replicaTraining, r.Step
			changed = true
		}
		if rp.stage != st.Stage && rp.state == replicaTraining {
			rp.stage = st.Stage
			changed = true
		}
	}
	if changed {
		w.checkShown()
	}
	return changed
}

// peers folds in the peer list and reports whether the swarm changed.
func (w *swarm) peers(list []Peer) bool {
	changed := false
	listed := map[string]bool{}
	cands := make(map[string]string, len(list))
	for _, p := range list {
		cands[p.ID] = p.Candidate
		if p.Stage < 0 || p.State != PeerActive {
			continue
		}
		listed[p.ID] = true
		if w.find(p.ID) >= 0 {
			continue
		}
		if _, gone := w.goneAt(p.ID); gone {
			continue // a departed peer comes back through an event or a record
		}
		w.replicas = append(w.replicas, replica{stage: p.Stage, peer: p.ID, state: replicaJoining, listedOnly: true})
		changed = true
	}
	// A peer known from the list alone and no longer in it was never a
	// replica: drop it without a departure.
	out := w.replicas[:0]
	for _, r := range w.replicas {
		if r.listedOnly && !listed[r.peer] {
			changed = true
			continue
		}
		out = append(out, r)
	}
	clear(w.replicas[len(out):])
	w.replicas = out
	for i := range w.replicas {
		r := &w.replicas[i]
		if c := cands[r.peer]; c != r.candidateListed {
			r.candidateListed = c
			changed = true
		}
	}
	w.candidates = cands
	if changed {
		w.checkShown()
	}
	return changed
}

// isReplicaEvent reports whether kind is one of the swarm's events.
func isReplicaEvent(kind string) bool {
	return strings.HasPrefix(kind, "replica_") || kind == "state_download"
}

// event folds in an event and reports whether the swarm changed. Events
// of other kinds are ignored; so is a replica event that names no peer.
func (w *swarm) event(e *metrics.Event) bool {
	if !isReplicaEvent(e.Kind) {
		return false
	}
	changed := !w.shown
	w.shown = true
	peer, _ := detailString(e.Detail, "peer")
	if peer == "" {
		return changed
	}
	k := w.find(peer)
	stage, hasStage := detailInt(e.Detail, "stage")
	step := e.Step
	if s, ok := detailInt(e.Detail, "step"); ok {
		step = s
	}
	reason, _ := detailString(e.Detail, "reason")
	// add makes the card of a peer this event is the first to name.
	add := func(state replicaState) *replica {
		if k < 0 {
			if !hasStage {
				stage = -1
			}
			w.replicas = append(w.replicas, replica{stage: stage, peer: peer, state: state, since: step, candidateListed: w.candidates[peer]})
			k = len(w.replicas) - 1
		}
		r := &w.replicas[k]
		if hasStage {
			r.stage = stage
		}
		r.listedOnly = false
		if r.state != state {
			r.state, r.since = state, step
		}
		return r
	}
	switch e.Kind {
	case "replica_joining":
		r := add(replicaSyncing)
		r.from, _ = detailString(e.Detail, "from")
		r.downloaded = false
	case "state_download":
		r := add(replicaSyncing)
		if from, ok := detailString(e.Detail, "from"); ok {
			r.from = from
		}
		r.downloaded = true
		r.dlBytes = int64(detailFloat(e.Detail, "bytes"))
		r.dlSeconds = detailFloat(e.Detail, "seconds")
		r.dlResumed, _ = detailInt(e.Detail, "resumed")
	case "replica_joined":
		add(replicaTraining)
	case "replica_leaving":
		add(replicaLeaving)
	case "replica_demoted":
		// A demoted replica keeps its state; one no record named yet
		// is training, or it could not be slow.
		state := replicaTraining
		if k >= 0 {
			state = w.replicas[k].state
		}
		r := add(state)
		r.demoted, r.demotedReason = true, reason
	case "replica_left", "replica_dropped", "replica_dead":
		if k >= 0 {
			if !hasStage {
				stage = w.replicas[k].stage
			}
			w.replicas = append(w.replicas[:k], w.replicas[k+1:]...)
		} else if !hasStage {
			stage = -1
		}
		w.gone = append(w.gone, departure{stage: stage, peer: peer, kind: e.Kind, reason: reason, step: step})
		if len(w.gone) > maxDepartures {
			w.gone = append(w.gone[:0], w.gone[len(w.gone)-maxDepartures:]...)
		}
	default:
		// Another replica_* kind: the panel shows, the cards do not change.
		return changed
	}
	return true
}

// appendSwarm writes the swarm as the page reads it:
//
//	{"shown":true,
//	 "replicas":[{"stage":0,"peer":"peer-0","state":"training","since":1,
//	              "from":"…","download":{"bytes":…,"seconds":…,"resumed":0},
//	              "demoted":"reason","candidate":"host"}, …],
//	 "gone":[{"stage":0,"peer":"peer-2","kind":"replica_dead","reason":"…","step":7}, …]}
//
// from, download, demoted and candidate are present only when known.
func appendSwarm(b []byte, w *swarm) []byte {
	b = append(b, `{"shown":`...)
	b = strconv.AppendBool(b, w.shown)
	b = append(b, `,"replicas":[`...)
	for i, r := range w.replicas {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"stage":`...)
		b = strconv.AppendInt(b, int64(r.stage), 10)
		b = append(b, `,"peer":`...)
		b = appendString(b, r.peer)
		b = append(b, `,"state":`...)
		b = appendString(b, r.state.String())
		b = append(b, `,"since":`...)
		b = strconv.AppendInt(b, int64(r.since), 10)
		if r.from != "" {
			b = append(b, `,"from":`...)
			b = appendString(b, r.from)
		}
		if r.downloaded {
			b = append(b, `,"download":{"bytes":`...)
			b = strconv.AppendInt(b, r.dlBytes, 10)
			b = append(b, `,"seconds":`...)
			b = appendFloat(b, r.dlSeconds)
			b = append(b, `,"resumed":`...)
			b = strconv.AppendInt(b, int64(r.dlResumed), 10)
			b = append(b, '}')
		}
		if r.demoted {
			b = append(b, `,"demoted":`...)
			b = appendString(b, r.demotedReason)
		}
		if r.candidateListed != "" {
			b = append(b, `,"candidate":`...)
			b = appendString(b, r.candidateListed)
		}
		b = append(b, '}')
	}
	b = append(b, `],"gone":[`...)
	for i, d := range w.gone {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"stage":`...)
		b = strconv.AppendInt(b, int64(d.stage), 10)
		b = append(b, `,"peer":`...)
		b = appendString(b, d.peer)
		b = append(b, `,"kind":`...)
		b = appendString(b, d.kind)
		b = append(b, `,"reason":`...)
		b = appendString(b, d.reason)
		b = append(b, `,"step":`...)
		b = strconv.AppendInt(b, int64(d.step), 10)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// Event details arrive as Go values from the runtime in this process
// (int, string) or as JSON numbers when a recorded metrics.jsonl is
// replayed (float64, json.Number): these read either.

func detailString(d map[string]any, k string) (string, bool) {
	s, ok := d[k].(string)
	return s, ok
}

func detailFloat(d map[string]any, k string) float64 {
	switch v := d[k].(type) {
	case int:
		return float64(v)
	case int32:
		return float64(v)
	case int64:
		return float64(v)
	case float64:
		return v
	case float32:
		return float64(v)
	case json.Number:
		f, _ := v.Float64()
		return f
	}
	return 0
}

func detailInt(d map[string]any, k string) (int, bool) {
	switch v := d[k].(type) {
	case int:
		return v, true
	case int32:
		return int(v), true
	case int64:
		return int(v), true
	case float64:
		return int(v), v == float64(int(v))
	case float32:
		return int(v), v == float32(int(v))
	case json.Number:
		n, err := v.Int64()
		return int(n), err == nil
	}
	return 0, false
}
