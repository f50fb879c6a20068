package web

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/metrics"
)

// rec2x2 is a step record of 2 stages × 2 replicas, replica-major as the
// runtime numbers its workers.
func rec2x2(step int, peers ...string) metrics.StepRecord {
	if len(peers) == 0 {
		peers = []string{"p0", "p1", "p2", "p3"}
	}
	r := metrics.StepRecord{Step: step, ReplicaBytes: 1000}
	for k, p := range peers {
		r.Stages = append(r.Stages, metrics.StageStats{Stage: k % 2, Peer: p, BusySeconds: 0.1})
	}
	return r
}

func ev(kind string, step int, detail map[string]any) metrics.Event {
	return metrics.Event{Type: "event", Kind: kind, Step: step, Detail: detail}
}

// cards is the swarm as one line a card, "stage peer state@since +extras",
// then the departures: what the page draws, in the order it draws it.
func cards(w *swarm) []string {
	var out []string
	for _, r := range w.replicas {
		s := fmt.Sprintf("%d %s %s@%d", r.stage, r.peer, r.state, r.since)
		if r.from != "" {
			s += " from=" + r.from
		}
		if r.downloaded {
			s += fmt.Sprintf(" dl=%d/%gs/%d", r.dlBytes, r.dlSeconds, r.dlResumed)
		}
		if r.demoted {
			s += " slow=" + r.demotedReason
		}
		if r.candidateListed != "" {
			s += " path=" + r.candidateListed
		}
		out = append(out, s)
	}
	for _, d := range w.gone {
		out = append(out, fmt.Sprintf("gone %d %s %s@%d %s", d.stage, d.peer, d.kind, d.step, d.reason))
	}
	return out
}

// TestSwarmStates feeds the swarm what a run publishes and checks the
// cards after each input: who is on which stage, in which state since
// which step, and which replicas left.
func TestSwarmStates(t *testing.T) {
	type input struct {
		rec   *metrics.StepRecord
		event *metrics.Event
		peers []Peer
	}
	R := func(r metrics.StepRecord) input { return input{rec: &r} }
	E := func(e metrics.Event) input { return input{event: &e} }
	P := func(p ...Peer) input { return input{peers: p} }
	type check struct {
		in    input
		want  []string // nil: no cards
		shown bool
	}
	for _, tc := range []struct {
		name  string
		steps []check
	}{
		{"a chain is no swarm", []check{
			{R(rec2x2(1, "a", "b")), []string{"0 a training@1", "1 b training@1"}, false},
			{R(rec2x2(2, "a", "b")), []string{"0 a training@1", "1 b training@1"}, false},
		}},
		{"2x2 from its records", []check{
			{R(rec2x2(1)), []string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1", "1 p3 training@1"}, true},
		}},
		{"the coordinator's own stages are no replicas", []check{
			{R(rec2x2(1, "", "", "", "")), nil, false},
		}},
		{"join: syncing, downloaded, training", []check{
			{R(rec2x2(1)), []string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1", "1 p3 training@1"}, true},
			{E(ev("replica_joining", 2, map[string]any{"stage": 1, "peer": "p4", "from": "p1"})),
				[]string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1", "1 p3 training@1", "1 p4 syncing@2 from=p1"}, true},
			{E(ev("state_download", 3, map[string]any{"stage": 1, "peer": "p4", "from": "p1", "bytes": 1 << 20, "seconds": 0.5, "resumed": 1})),
				[]string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1", "1 p3 training@1", "1 p4 syncing@2 from=p1 dl=1048576/0.5s/1"}, true},
			// A step without it changes nothing: it is not admitted yet.
			{R(rec2x2(3)), []string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1", "1 p3 training@1", "1 p4 syncing@2 from=p1 dl=1048576/0.5s/1"}, true},
			{E(ev("replica_joined", 4, map[string]any{"stage": 1, "peer": "p4", "step": 4})),
				[]string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1", "1 p3 training@1", "1 p4 training@4 from=p1 dl=1048576/0.5s/1"}, true},
		}},
		{"a known peer is joining until it syncs or trains", []check{
			{P(Peer{ID: "a", Stage: 0, State: PeerActive, Candidate: "srflx"}, Peer{ID: "s", Stage: -1, State: PeerSpare}),
				[]string{"0 a joining@0 path=srflx"}, false},
			{R(rec2x2(1, "a", "b", "c")), []string{"0 a training@1 path=srflx", "1 b training@1", "0 c training@1"}, true},
			// Listed, then no longer: it never was a replica.
			{P(Peer{ID: "a", Stage: 0, State: PeerActive, Candidate: "srflx"}, Peer{ID: "x", Stage: 1, State: PeerActive, Candidate: "relay"}),
				[]string{"0 a training@1 path=srflx", "1 b training@1", "0 c training@1", "1 x joining@0 path=relay"}, true},
			{P(Peer{ID: "a", Stage: 0, State: PeerActive, Candidate: "host"}),
				[]string{"0 a training@1 path=host", "1 b training@1", "0 c training@1"}, true},
		}},
		{"leave, demote, die", []check{
			{R(rec2x2(1)), []string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1", "1 p3 training@1"}, true},
			{E(ev("replica_demoted", 2, map[string]any{"stage": 0, "peer": "p2", "reason": "slowest by 3x"})),
				[]string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1 slow=slowest by 3x", "1 p3 training@1"}, true},
			{E(ev("replica_leaving", 3, map[string]any{"stage": 1, "peer": "p3", "reason": "asked"})),
				[]string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1 slow=slowest by 3x", "1 p3 leaving@3"}, true},
			{E(ev("replica_left", 4, map[string]any{"stage": 1, "peer": "p3", "reason": "asked", "step": 4})),
				[]string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1 slow=slowest by 3x", "gone 1 p3 replica_left@4 asked"}, true},
			// The record of the step it left in still names it: it stays gone.
			{R(rec2x2(4)), []string{"0 p0 training@1", "1 p1 training@1", "0 p2 training@1 slow=slowest by 3x", "gone 1 p3 replica_left@4 asked"}, true},
			// A death names no stage: the card's is kept.
			{E(ev("replica_dead", 5, map[string]any{"peer": "p2", "reason": "no heartbeat for 10s", "step": 5})),
				[]string{"0 p0 training@1", "1 p1 training@1", "gone 1 p3 replica_left@4 asked", "gone 0 p2 replica_dead@5 no heartbeat for 10s"}, true},
			{R(rec2x2(6, "p0", "p1")), []string{"0 p0 training@1", "1 p1 training@1", "gone 1 p3 replica_left@4 asked", "gone 0 p2 replica_dead@5 no heartbeat for 10s"}, true},
		}},
		{"a replica event shows the panel, even of a chain", []check{
			{R(rec2x2(1, "a", "b")), []string{"0 a training@1", "1 b training@1"}, false},
			{E(ev("replica_dropped", 2, map[string]any{"stage": 1, "peer": "b", "reason": "slow", "step": 2})),
				[]string{"0 a training@1", "gone 1 b replica_dropped@2 slow"}, true},
		}},
		{"other events change nothing", []check{
			{E(ev("rank_change", 2, map[string]any{"stage": 1, "peer": "b"})), nil, false},
			{E(ev("peer_dead", 2, map[string]any{"peer": "b"})), nil, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSwarm()
			for i, c := range tc.steps {
				switch {
				case c.in.rec != nil:
					w.step(c.in.rec)
				case c.in.event != nil:
					w.event(c.in.event)
				default:
					w.peers(c.in.peers)
				}
				if got := cards(&w); !reflect.DeepEqual(got, c.want) {
					t.Errorf("after input %d:\n got %q\nwant %q", i, got, c.want)
				}
				if w.shown != c.shown {
					t.Errorf("after input %d: shown = %v, want %v", i, w.shown, c.shown)
				}
			}
		})
	}
}

// TestSwarmReportsChanges: the server sends the swarm again only when it
// changed, not with every step.
func TestSwarmReportsChanges(t *testing.T) {
	w := newSwarm()
	r1, r2 := rec2x2(1), rec2x2(2)
	if !w.step(&r1) {
		t.Error("first record of four replicas: no change reported")
	}
	if w.step(&r2) {
		t.Error("second record with the same replicas reported a change")
	}
	e := ev("replica_joining", 3, map[string]any{"stage": 0, "peer": "p9", "from": "p0"})
	if !w.event(&e) {
		t.Error("replica_joining reported no change")
	}
	other := ev("rank_change", 3, map[string]any{"rank": 8})
	if w.event(&other) {
		t.Error("rank_change reported a change of the swarm")
	}
	p := []Peer{{ID: "p0", Stage: 0, State: PeerActive}}
	w.peers(p)
	if w.peers(p) {
		t.Error("the same peer list twice reported a change")
	}
}

// TestSwarmFromRecordedEvents: the details of a replayed metrics.jsonl
// are JSON numbers (float64), not the runtime's ints; they must read the
// same.
func TestSwarmFromRecordedEvents(t *testing.T) {
	lines := []string{
		`{"type":"event","kind":"replica_joining","step":5,"wall_seconds":1.5,"detail":{"stage":1,"peer":"p4","from":"p1"}}`,
		`{"type":"event","kind":"state_download","step":5,"wall_seconds":1.9,"detail":{"stage":1,"peer":"p4","from":"p1","bytes":3300000,"seconds":0.42,"resumed":2}}`,
		`{"type":"event","kind":"replica_joined","step":6,"wall_seconds":2.0,"detail":{"stage":1,"peer":"p4","step":6}}`,
	}
	w := newSwarm()
	for _, l := range lines {
		var e metrics.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		w.event(&e)
	}
	want := []string{"1 p4 training@6 from=p1 dl=3300000/0.42s/2"}
	if got := cards(&w); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestAppendSwarm: the encoding is JSON with the names the page reads,
// and peer-supplied names are escaped.
func TestAppendSwarm(t *testing.T) {
	w := newSwarm()
	r := rec2x2(1, "p0", "p1", `<b>"x"`, "p3")
	w.step(&r)
	for _, e := range []metrics.Event{
		ev("state_download", 2, map[string]any{"stage": 0, "peer": "p5", "from": "p0", "bytes": 10, "seconds": 0.25, "resumed": 0}),
		ev("replica_demoted", 2, map[string]any{"stage": 1, "peer": "p3", "reason": "slow"}),
		ev("replica_dead", 3, map[string]any{"stage": 1, "peer": "p1", "reason": "gone", "step": 3}),
	} {
		w.event(&e)
	}
	b := appendSwarm(nil, &w)
	if strings.Contains(string(b), "<b>") {
		t.Errorf("peer name not escaped: %s", b)
	}
	var got struct {
		Shown    bool `json:"shown"`
		Replicas []struct {
			Stage    int    `json:"stage"`
			Peer     string `json:"peer"`
			State    string `json:"state"`
			Since    int    `json:"since"`
			From     string `json:"from"`
			Download *struct {
				Bytes   int64   `json:"bytes"`
				Seconds float64 `json:"seconds"`
				Resumed int     `json:"resumed"`
			} `json:"download"`
			Demoted *string `json:"demoted"`
		} `json:"replicas"`
		Gone []struct {
			Stage  int    `json:"stage"`
			Peer   string `json:"peer"`
			Kind   string `json:"kind"`
			Reason string `json:"reason"`
			Step   int    `json:"step"`
		} `json:"gone"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if !got.Shown || len(got.Replicas) != 4 || len(got.Gone) != 1 {
		t.Fatalf("decoded %+v from %s", got, b)
	}
	if r := got.Replicas[1]; r.Peer != `<b>"x"` || r.State != "training" {
		t.Errorf("replica 1 = %+v", r)
	}
	if r := got.Replicas[2]; r.Demoted == nil || *r.Demoted != "slow" {
		t.Errorf("replica 2 = %+v, want demoted: slow", r)
	}
	if r := got.Replicas[3]; r.Peer != "p5" || r.State != "syncing" || r.From != "p0" || r.Download == nil || r.Download.Bytes != 10 || r.Download.Seconds != 0.25 {
		t.Errorf("replica 3 = %+v, want p5 syncing from p0, 10 bytes downloaded in 0.25 s", r)
	}
	if g := got.Gone[0]; g.Peer != "p1" || g.Stage != 1 || g.Kind != "replica_dead" || g.Step != 3 || g.Reason != "gone" {
		t.Errorf("departure = %+v", g)
	}
}

// TestSwarmDeparturesBounded: a long run's churn keeps the latest
// departures only.
func TestSwarmDeparturesBounded(t *testing.T) {
	w := newSwarm()
	for i := range 3 * maxDepartures {
		e := ev("replica_dead", i, map[string]any{"stage": 0, "peer": fmt.Sprint("p", i), "step": i})
		w.event(&e)
	}
	if len(w.gone) != maxDepartures || w.gone[len(w.gone)-1].step != 3*maxDepartures-1 || w.gone[0].step != 2*maxDepartures {
		t.Errorf("kept %d departures, steps %d…%d; want the last %d", len(w.gone), w.gone[0].step, w.gone[len(w.gone)-1].step, maxDepartures)
	}
}
