package web_test

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/web"
	"github.com/narrowband/narrowband/web/webtest"
)

// stream opens /events and returns a reader of its events.
func stream(t *testing.T, ctx context.Context, url string) *webtest.SSEReader {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /events: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /events: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("GET /events: Content-Type %q, want text/event-stream", ct)
	}
	return webtest.NewSSEReader(resp.Body, 0)
}

func next(t *testing.T, r *webtest.SSEReader) webtest.Event {
	t.Helper()
	ev, err := r.Next()
	if err != nil {
		t.Fatalf("read event: %v", err)
	}
	return ev
}

type snapshot struct {
	Run *struct {
		Name       string `json:"name"`
		TotalSteps int    `json:"total_steps"`
	} `json:"run"`
	Peers  []web.Peer           `json:"-"`
	Status string               `json:"status"`
	Steps  []json.RawMessage    `json:"steps"`
	Recent []metrics.StepRecord `json:"recent"`
	Spans  []metrics.Span       `json:"spans"`
	Events []metrics.Event      `json:"events"`
}

func stepOf(t *testing.T, raw []byte) int {
	t.Helper()
	var r struct {
		Step int `json:"step"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("decode step %q: %v", raw, err)
	}
	return r.Step
}

func decodeSnapshot(t *testing.T, ev webtest.Event) snapshot {
	t.Helper()
	if ev.Name != "snapshot" {
		t.Fatalf("got event %q, want snapshot", ev.Name)
	}
	var s snapshot
	if err := json.Unmarshal(ev.Data, &s); err != nil {
		t.Fatalf("decode snapshot: %v\n%s", err, ev.Data)
	}
	return s
}

func step(i int) metrics.StepRecord {
	return metrics.StepRecord{Step: i, Tokens: int64(i) * 2048, Loss: 5 - float64(i)/100, TokensPerSecond: 1000, WallSeconds: float64(i) / 10,
		Stages: []metrics.StageStats{{Stage: 0, BusySeconds: 0.08, IdleSeconds: 0.02, NetWait: 0.01}},
		Links:  []metrics.LinkStats{{From: 0, To: 1, BytesForward: 1000, BytesBackward: 900, Messages: 4, Ratio: 8, RTTMillis: 20, Candidate: "host"}}}
}

func TestStreamSnapshotThenDeltas(t *testing.T) {
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	srv.SetRun(web.RunInfo{Name: "r1", TotalSteps: 100, Config: "[model]\nlayers = 2\n"})
	srv.SetPeers([]web.Peer{{ID: "a", Stage: 0, State: web.PeerActive}, {ID: "b", Stage: 1, State: web.PeerDead}})
	for i := 1; i <= 5; i++ {
		srv.PublishStep(step(i))
	}
	srv.PublishSpans([]metrics.Span{{Stage: 0, Kind: "forward", Step: 5, Start: 0.1, End: 0.2}})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := stream(t, ctx, hs.URL)
	snap := decodeSnapshot(t, next(t, r))
	if snap.Run == nil || snap.Run.Name != "r1" || snap.Run.TotalSteps != 100 {
		t.Errorf("snapshot run = %+v, want r1 with 100 steps", snap.Run)
	}
	if len(snap.Steps) != 5 || stepOf(t, snap.Steps[0]) != 1 || stepOf(t, snap.Steps[4]) != 5 {
		t.Errorf("snapshot has %d steps, want steps 1..5", len(snap.Steps))
	}
	if len(snap.Recent) != 5 || len(snap.Recent[4].Links) != 1 || snap.Recent[4].Links[0].Candidate != "host" {
		t.Errorf("snapshot recent records lack link stats: %+v", snap.Recent)
	}
	if len(snap.Spans) != 1 || snap.Spans[0].Kind != "forward" {
		t.Errorf("snapshot spans = %+v", snap.Spans)
	}

	srv.PublishStep(step(6))
	srv.PublishSpans([]metrics.Span{{Stage: 1, Kind: "backward", Step: 6, Start: 0.3, End: 0.4}})
	srv.PublishEvent(metrics.Event{Kind: "peer_dead", Step: 6, Detail: map[string]any{"peer": "b"}})
	srv.SetStatus("recovering")
	want := []string{"step", "spans", "event", "status"}
	for _, w := range want {
		ev := next(t, r)
		if ev.Name != w {
			t.Fatalf("got event %q, want %q (deltas must arrive in publish order)", ev.Name, w)
		}
		switch w {
		case "step":
			var rec metrics.StepRecord
			if err := json.Unmarshal(ev.Data, &rec); err != nil || rec.Step != 6 || len(rec.Stages) != 1 {
				t.Errorf("step delta %s: %v", ev.Data, err)
			}
		case "event":
			var e metrics.Event
			if err := json.Unmarshal(ev.Data, &e); err != nil || e.Kind != "peer_dead" || e.Type != "event" || e.Detail["peer"] != "b" {
				t.Errorf("event delta %s: %v", ev.Data, err)
			}
		case "status":
			if string(ev.Data) != `"recovering"` {
				t.Errorf("status delta %s", ev.Data)
			}
		}
	}
}

// TestStreamNoGapNoDuplicate connects observers while steps are being
// published: each must see every step exactly once, in order, across its
// snapshot and the deltas after it.
func TestStreamNoGapNoDuplicate(t *testing.T) {
	const steps = 3000
	srv := web.New(web.Options{MaxSteps: steps + 10})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		r := stream(t, ctx, hs.URL) // connect before or during the run
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := 0
			for last < steps {
				ev, err := r.Next()
				if err != nil {
					t.Errorf("observer: %v at step %d", err, last)
					return
				}
				switch ev.Name {
				case "snapshot":
					var s struct {
						Steps []struct{ Step int } `json:"steps"`
					}
					if err := json.Unmarshal(ev.Data, &s); err != nil {
						t.Errorf("snapshot: %v", err)
						return
					}
					for i, st := range s.Steps {
						if st.Step != i+1 {
							t.Errorf("snapshot step %d is %d", i, st.Step)
							return
						}
					}
					if len(s.Steps) < last {
						t.Errorf("snapshot went back from step %d to %d", last, len(s.Steps))
					}
					last = len(s.Steps)
				case "step":
					var s struct{ Step int }
					if err := json.Unmarshal(ev.Data, &s); err != nil {
						t.Errorf("step: %v", err)
						return
					}
					if s.Step != last+1 {
						t.Errorf("after step %d got step %d", last, s.Step)
						return
					}
					last = s.Step
				}
			}
		}()
		for i := 1; i <= steps/8; i++ {
			srv.PublishStep(step(c*steps/8 + i))
		}
	}
	wg.Wait()
}

func TestReadOnly(t *testing.T) {
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	for _, path := range []string{"/", "/events", "/api/snapshot", "/static/app.js"} {
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			req, _ := http.NewRequest(m, hs.URL+path, strings.NewReader("x"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %s, want 405", m, path, resp.Status)
			}
		}
	}
}

// TestPageIsSelfContained checks the page loads nothing from elsewhere,
// so it works offline, and that the CSP header enforces it in browsers.
func TestPageIsSelfContained(t *testing.T) {
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	for _, tc := range []struct{ path, ctype string }{
		{"/", "text/html"}, {"/static/app.js", "javascript"}, {"/static/style.css", "text/css"},
	} {
		resp, err := http.Get(hs.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), tc.ctype) {
			t.Errorf("GET %s: %s %q", tc.path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: no same-origin CSP", tc.path)
		}
		for _, bad := range []string{"http://", "https://", "//fonts.", "@import"} {
			if strings.Contains(string(body), bad) {
				t.Errorf("%s references %q: the page must work offline", tc.path, bad)
			}
		}
	}
	for _, id := range []string{`id="loss-value"`, `id="step-value"`, `id="links"`, `id="stages"`, `id="timeline"`, `id="loss-chart"`, `data-step=`} {
		resp, _ := http.Get(hs.URL + "/")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), id) {
			t.Errorf("page lacks %s, which tests rely on", id)
		}
	}
}

// TestNonFiniteValues: a diverging run's NaN loss must reach the page,
// not break the stream (encoding/json would refuse it).
func TestNonFiniteValues(t *testing.T) {
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	inf := math.Inf(1)
	srv.PublishStep(metrics.StepRecord{Step: 1, Loss: math.NaN(), ValLoss: &inf, Links: []metrics.LinkStats{{Candidate: "relay\n<script>"}}})
	srv.PublishEvent(metrics.Event{Kind: "rank_change", Detail: map[string]any{"bad": math.NaN()}})
	resp, err := http.Get(hs.URL + "/api/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var snap struct {
		Steps  []map[string]any `json:"steps"`
		Recent []struct {
			Links []struct{ Candidate string } `json:"links"`
		} `json:"recent"`
		Events []metrics.Event `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		t.Fatalf("snapshot with NaN is not valid JSON: %v", err)
	}
	if snap.Steps[0]["loss"] != "NaN" || snap.Steps[0]["val_loss"] != "Infinity" {
		t.Errorf("non-finite values encoded as %v, %v; want \"NaN\", \"Infinity\"", snap.Steps[0]["loss"], snap.Steps[0]["val_loss"])
	}
	if snap.Recent[0].Links[0].Candidate != "relay\n<script>" {
		t.Errorf("candidate string mangled: %q", snap.Recent[0].Links[0].Candidate)
	}
	if len(snap.Events) != 1 || snap.Events[0].Detail["error"] == nil {
		t.Errorf("event with unencodable detail: %+v, want it kept with an error note", snap.Events)
	}
}

func TestMaxObservers(t *testing.T) {
	srv := web.New(web.Options{MaxObservers: 2})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next(t, stream(t, ctx, hs.URL))
	next(t, stream(t, ctx, hs.URL))
	if n := srv.Observers(); n != 2 {
		t.Fatalf("%d observers after two connected, want 2", n)
	}
	resp, err := http.Get(hs.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("third observer: %s, want 503", resp.Status)
	}
}

// noLeak fails the test if goroutines started during it are still running
// shortly after it ends (after its deferred calls).
func noLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func TestCloseEndsStreams(t *testing.T) {
	noLeak(t)
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := stream(t, ctx, hs.URL)
	next(t, r)
	srv.Close()
	done := make(chan error, 1)
	go func() {
		_, err := r.Next()
		done <- err
	}()
	select {
	case err := <-done:
		if err != io.EOF && err != io.ErrUnexpectedEOF {
			t.Errorf("after Close the stream gave %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open 5s after Close")
	}
	if n := srv.Observers(); n != 0 {
		t.Errorf("%d observers after Close", n)
	}
}

func TestHistoryBoundedKeepsShape(t *testing.T) {
	srv := web.New(web.Options{MaxSteps: 200})
	for i := 1; i <= 20000; i++ {
		r := step(i)
		if i%1000 == 0 {
			v := r.Loss
			r.ValLoss = &v
		}
		srv.PublishStep(r)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	resp, err := http.Get(hs.URL + "/api/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var snap struct {
		Steps []metrics.StepRecord `json:"steps"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		t.Fatal(err)
	}
	n := len(snap.Steps)
	if n > 200 || n < 100 {
		t.Fatalf("history holds %d steps, want between 100 and 200", n)
	}
	if snap.Steps[0].Step != 1 || snap.Steps[n-1].Step != 20000 {
		t.Errorf("history spans steps %d..%d, want 1..20000", snap.Steps[0].Step, snap.Steps[n-1].Step)
	}
	vals := 0
	for i, s := range snap.Steps {
		if i > 0 && s.Step <= snap.Steps[i-1].Step {
			t.Fatalf("history out of order at %d", i)
		}
		if s.ValLoss != nil {
			vals++
		}
		if len(s.Links) > 0 {
			t.Fatalf("long-term history keeps per-link stats; it should be compact")
		}
	}
	if vals != 20 {
		t.Errorf("history kept %d of 20 val points; they are rare and must all stay", vals)
	}
	// The newest steps are dense: the recent curve is exact.
	for i := n - 20; i < n; i++ {
		if snap.Steps[i].Step != 20000-(n-1-i) {
			t.Errorf("recent history is not dense: position %d holds step %d", i, snap.Steps[i].Step)
			break
		}
	}
}

// TestManyObservers: 60 observers, some joining mid-run, all end up
// with the whole run.
func TestManyObservers(t *testing.T) {
	const observers, steps = 60, 600
	noLeak(t)
	srv := web.New(web.Options{FlushInterval: 10 * time.Millisecond})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	published := 0
	for c := range observers {
		r := stream(t, ctx, hs.URL)
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := 0
			for last < steps {
				ev, err := r.Next()
				if err != nil {
					t.Errorf("observer %d stopped at step %d: %v", c, last, err)
					return
				}
				switch ev.Name {
				case "snapshot":
					var s struct {
						Steps []struct{ Step int } `json:"steps"`
					}
					if err := json.Unmarshal(ev.Data, &s); err != nil {
						t.Errorf("snapshot: %v", err)
						return
					}
					if n := len(s.Steps); n > 0 {
						last = s.Steps[n-1].Step
					}
				case "step":
					var s struct{ Step int }
					_ = json.Unmarshal(ev.Data, &s)
					last = s.Step
				}
			}
		}()
		for range steps / observers {
			published++
			srv.PublishStep(step(published))
		}
	}
	if n := srv.Observers(); n != observers {
		t.Errorf("%d observers connected, want %d", n, observers)
	}
	wg.Wait()
}

// TestSnapshotKeepsTheSwarm: a tab opened long after a replica joined
// must still show it, though the event ring has dropped the events that
// said so; and a live observer gets the swarm again right after the event
// that changed it.
func TestSnapshotKeepsTheSwarm(t *testing.T) {
	srv := web.New(web.Options{MaxEvents: 2})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	rec := func(i int) metrics.StepRecord {
		r := step(i)
		r.ReplicaBytes = 344780
		r.Stages = nil
		for k, p := range []string{"peer-0", "peer-1", "peer-2", "peer-3"} {
			r.Stages = append(r.Stages, metrics.StageStats{Stage: k % 2, Peer: p, BusySeconds: 0.03, BytesSent: 16468})
		}
		return r
	}
	srv.PublishStep(rec(1))
	srv.PublishEvent(metrics.Event{Kind: "replica_joining", Step: 2, Detail: map[string]any{"stage": 1, "peer": "peer-4", "from": "peer-1"}})
	srv.PublishEvent(metrics.Event{Kind: "replica_joined", Step: 2, Detail: map[string]any{"stage": 1, "peer": "peer-4", "step": 2}})
	for i := 2; i <= 10; i++ {
		srv.PublishStep(rec(i))
		srv.PublishEvent(metrics.Event{Kind: "rank_change", Step: i, Detail: map[string]any{"rank": i}})
	}

	type card struct {
		Stage int    `json:"stage"`
		Peer  string `json:"peer"`
		State string `json:"state"`
		Since int    `json:"since"`
	}
	type swarmJSON struct {
		Shown    bool   `json:"shown"`
		Replicas []card `json:"replicas"`
		Gone     []struct {
			Peer string `json:"peer"`
			Kind string `json:"kind"`
			Step int    `json:"step"`
		} `json:"gone"`
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := stream(t, ctx, hs.URL)
	ev := next(t, r)
	var snap struct {
		Swarm  swarmJSON         `json:"swarm"`
		Events []metrics.Event   `json:"events"`
		Recent []json.RawMessage `json:"recent"`
	}
	if err := json.Unmarshal(ev.Data, &snap); err != nil {
		t.Fatal(err)
	}
	for _, e := range snap.Events {
		if strings.HasPrefix(e.Kind, "replica_") {
			t.Fatalf("the event ring still holds %s: the test proves nothing", e.Kind)
		}
	}
	want := []card{{0, "peer-0", "training", 1}, {1, "peer-1", "training", 1}, {0, "peer-2", "training", 1}, {1, "peer-3", "training", 1}, {1, "peer-4", "training", 2}}
	if !snap.Swarm.Shown || !reflect.DeepEqual(snap.Swarm.Replicas, want) {
		t.Errorf("snapshot swarm = %+v, want shown with %+v", snap.Swarm, want)
	}
	// The step records the page computes the cards' rates from carry the
	// replicas' names and the averaging traffic.
	var last metrics.StepRecord
	if err := json.Unmarshal(snap.Recent[len(snap.Recent)-1], &last); err != nil {
		t.Fatal(err)
	}
	if last.ReplicaBytes != 344780 || len(last.Stages) != 4 || last.Stages[2].Peer != "peer-2" || last.Stages[2].BytesSent != 16468 {
		t.Errorf("recent step record = %+v; want replica_bytes and each replica's peer and bytes_sent", last)
	}

	srv.PublishEvent(metrics.Event{Kind: "replica_dead", Step: 11, Detail: map[string]any{"stage": 0, "peer": "peer-2", "reason": "no heartbeat", "step": 11}})
	if ev := next(t, r); ev.Name != "event" {
		t.Fatalf("got %q, want the event first", ev.Name)
	}
	ev = next(t, r)
	if ev.Name != "swarm" {
		t.Fatalf("got %q after a replica_dead event, want swarm", ev.Name)
	}
	var live swarmJSON
	if err := json.Unmarshal(ev.Data, &live); err != nil {
		t.Fatal(err)
	}
	if len(live.Replicas) != 4 || len(live.Gone) != 1 || live.Gone[0].Peer != "peer-2" || live.Gone[0].Kind != "replica_dead" || live.Gone[0].Step != 11 {
		t.Errorf("swarm after replica_dead = %+v; want peer-2 gone at step 11 and 4 cards", live)
	}
	// A step with the same replicas sends no swarm frame.
	srv.PublishStep(rec(11))
	srv.SetStatus("done")
	for _, w := range []string{"step", "status"} {
		if ev := next(t, r); ev.Name != w {
			t.Fatalf("got %q, want %q", ev.Name, w)
		}
	}
}
