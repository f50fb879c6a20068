package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/web"
	"github.com/narrowband/narrowband/web/webtest"
)

// TestBrowserLiveView drives the page in headless Chromium while a
// synthetic run publishes: the first tab must follow the run live, and a
// tab opened mid-run must show the whole history so far.
func TestBrowserLiveView(t *testing.T) {
	b := webtest.NewBrowser(t)
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	simDone := make(chan error, 1)
	go func() {
		simDone <- webtest.Simulate(ctx, srv, webtest.SimConfig{Steps: 400, StepEvery: 40 * time.Millisecond, Seed: 1})
	}()

	dir := webtest.ArtifactDir(t)
	res := b.Watch(t, hs.URL, webtest.WatchOptions{WantSteps: 40, Screenshot: filepath.Join(dir, "web-live.png"), Timeout: 40 * time.Second, StayOnPage: true})
	if res.Last.Peers != 4 {
		t.Errorf("peers table has %d peers, want 4 (3 stages + a spare)", res.Last.Peers)
	}
	if res.Last.Stages != 3 || res.Last.Links != 2 {
		t.Errorf("got %d stage bars and %d links, want 3 and 2", res.Last.Stages, res.Last.Links)
	}
	if res.Last.Swarm != 0 {
		t.Errorf("a chain of one peer a stage shows the swarm panel (%d columns, %d cards): it is for runs with replicas", res.Last.Swarm, res.Last.Replicas)
	}
	if res.Last.RunName != "synthetic-gpt4x256" {
		t.Errorf("run name shown %q", res.Last.RunName)
	}
	if res.Last.Versions != 0 || res.Last.Stashes != 0 || res.Last.Drops != 0 {
		t.Errorf("a 1F1B run's timeline shows %d weight versions, %d stashes, %d drops: it has none", res.Last.Versions, res.Last.Stashes, res.Last.Drops)
	}

	// A second tab opened mid-run gets the history from the snapshot.
	tab2 := b.NewTab(t)
	if err := webtest.Navigate(tab2, hs.URL); err != nil {
		t.Fatal(err)
	}
	st2, err := webtest.WaitPage(tab2, 20*time.Second, func(s webtest.PageState) bool { return s.Step >= 50 && s.Spans > 0 })
	if err != nil {
		t.Fatalf("second tab: %v", err)
	}
	if st2.FirstStep != 1 || st2.Points < st2.Step-5 {
		t.Errorf("second tab shows steps from %d with %d chart points at step %d; want the whole history from step 1", st2.FirstStep, st2.Points, st2.Step)
	}
	if st2.ValPoints < st2.Step/10-1 {
		t.Errorf("second tab has %d val points at step %d, want one per 10 steps", st2.ValPoints, st2.Step)
	}
	// Both tabs keep following the run.
	st1, err := webtest.WaitPage(b.Tab(), 20*time.Second, func(s webtest.PageState) bool { return s.Step > st2.Step })
	if err != nil {
		t.Fatalf("first tab stopped following the run after the second opened: %v", err)
	}
	if err := webtest.Screenshot(tab2, filepath.Join(dir, "web-second-tab.png")); err != nil {
		t.Error(err)
	}
	t.Logf("first tab at step %d, second tab at step %d (from step %d)", st1.Step, st2.Step, st2.FirstStep)
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
	cancel()
	<-simDone
}

// TestBrowserAsyncTimeline: for an async run the timeline shows which
// weight version each forward and backward ran on (a stripe per version)
// and marks where versions are stashed and dropped.
func TestBrowserAsyncTimeline(t *testing.T) {
	b := webtest.NewBrowser(t)
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	simDone := make(chan error, 1)
	go func() {
		simDone <- webtest.Simulate(ctx, srv, webtest.SimConfig{Steps: 200, StepEvery: 40 * time.Millisecond, Seed: 3, Stages: 4, Async: true})
	}()
	res := b.Watch(t, hs.URL, webtest.WatchOptions{WantSteps: 10, Timeout: 40 * time.Second, StayOnPage: true})
	// Three steps are drawn; stage i runs 3-i steps stale, so stage 0
	// alone shows three versions, and the stages together more.
	st, err := webtest.WaitPage(b.Tab(), 20*time.Second, func(s webtest.PageState) bool { return s.Versions >= 4 && s.Stashes > 0 && s.Drops > 0 })
	if err != nil {
		t.Fatalf("timeline after step %d shows %d weight versions, %d stashes, %d drops: want several versions and both marks: %v", res.Last.Step, st.Versions, st.Stashes, st.Drops, err)
	}
	legend, err := chromedp.Run(b.Tab(), chromedp.Evaluate[string](`document.querySelector('#timeline-legend').textContent`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"weight version", "stash", "drop"} {
		if !strings.Contains(legend, want) {
			t.Errorf("legend %q does not explain %q", legend, want)
		}
	}
	if err := webtest.Screenshot(b.Tab(), filepath.Join(webtest.ArtifactDir(t), "web-async-timeline.png")); err != nil {
		t.Error(err)
	}
	t.Logf("step %d: %d versions, %d stashes, %d drops drawn", st.Step, st.Versions, st.Stashes, st.Drops)
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
	cancel()
	<-simDone
}

// TestWatchRunHelper runs the helper the runtime's tests use, the way they
// would: the HTTP server is closed by a deferred call while the browser
// still lives, which must not hang.
func TestWatchRunHelper(t *testing.T) {
	srv := web.New(web.Options{})
	defer srv.Close() // runs after hs.Close: the helper must have left the page
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = webtest.Simulate(ctx, srv, webtest.SimConfig{Steps: 1000, StepEvery: 30 * time.Millisecond, Stages: 2, Seed: 2})
	}()
	res := webtest.WatchRun(t, hs.URL, 15, filepath.Join(webtest.ArtifactDir(t), "web-watchrun.png"))
	if res.Last.Step < 15 || res.Last.Links != 1 || res.Last.Stages != 2 {
		t.Errorf("WatchRun saw %+v; want step ≥ 15, 1 link, 2 stages", res.Last)
	}
	// The page closes its stream when left, so the server frees the
	// observer and the deferred hs.Close does not wait on it.
	deadline := time.Now().Add(3 * time.Second)
	for srv.Observers() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d observers still open 3s after the page was left", srv.Observers())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
}

// TestBrowserHostCheck is DNS rebinding done for real: Chromium resolves a
// foreign name to the view's loopback address, as a rebinding attacker's
// domain would, and must get the refusal instead of the run, while the
// URL Listen printed opens the live page.
func TestBrowserHostCheck(t *testing.T) {
	b := webtest.NewBrowser(t, chromedp.Flag("host-resolver-rules", "MAP rebind.example 127.0.0.1"))
	ln, url, err := web.Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := web.New(web.Options{})
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	defer srv.Close()
	srv.SetRun(web.RunInfo{Name: "private-run", Config: `path = "/home/me/corpus"`, TotalSteps: 10})

	if err := webtest.Navigate(b.Tab(), url); err != nil {
		t.Fatal(err)
	}
	st, err := webtest.WaitPage(b.Tab(), 20*time.Second, func(s webtest.PageState) bool { return s.RunName == "private-run" })
	if err != nil {
		t.Fatalf("the printed URL %s does not show the run: %v (last state %+v)", url, err, st)
	}

	port := ln.Addr().(*net.TCPAddr).Port
	for _, path := range []string{"/", "/api/snapshot"} {
		foreign := fmt.Sprintf("http://rebind.example:%d%s", port, path)
		if err := webtest.Navigate(b.Tab(), foreign); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(b.Tab(), 10*time.Second)
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		cancel()
		if err != nil {
			t.Fatalf("open %s: %v", foreign, err)
		}
		if strings.Contains(text, "private-run") || strings.Contains(text, "/home/me") || !strings.Contains(text, "does not answer to host") {
			t.Fatalf("%s through a rebound name shows %.300q; want the refusal, not the run", foreign, text)
		}
	}
}

// swarmCard and swarmColumn are what the swarm panel shows, read from the
// page (swarmViewJS).
type swarmCard struct {
	Peer  string `json:"peer"`
	State string `json:"state"`
	Path  string `json:"path"`
	Slow  bool   `json:"slow"`
	Text  string `json:"text"`
}

type swarmColumn struct {
	Stage int         `json:"stage"`
	Cards []swarmCard `json:"cards"`
	Gone  []string    `json:"gone"`
}

type swarmView struct {
	Shown     bool          `json:"shown"`
	Sub       string        `json:"sub"`
	Averaging string        `json:"averaging"`
	Columns   []swarmColumn `json:"columns"`
}

const swarmViewJS = `(() => {
  const panel = document.querySelector('#swarm-panel');
  return {
    shown: !panel.hidden,
    sub: document.querySelector('#swarm-sub').textContent,
    averaging: document.querySelector('#swarm-avg').textContent,
    columns: [...document.querySelectorAll('#swarm .swarm-col')].map((c) => ({
      stage: Number(c.dataset.stage),
      cards: [...c.querySelectorAll('.replica')].map((r) => ({
        peer: r.dataset.peer, state: r.dataset.state,
        path: (r.querySelector('[data-path]') || {dataset: {}}).dataset.path || '',
        slow: !!r.querySelector('.badge.slow'), text: r.textContent,
      })),
      gone: [...c.querySelectorAll('.gone')].map((g) => g.textContent),
    })),
  };
})()`

// card finds peer's card in v, and the stage of its column.
func (v swarmView) card(peer string) (swarmCard, int, bool) {
	for _, c := range v.Columns {
		for _, r := range c.Cards {
			if r.Peer == peer {
				return r, c.Stage, true
			}
		}
	}
	return swarmCard{}, 0, false
}

// layout is the columns as "stage: peer/state …" lines, for messages
// and comparisons.
func (v swarmView) layout() []string {
	var out []string
	for _, c := range v.Columns {
		s := fmt.Sprintf("stage %d:", c.Stage)
		for _, r := range c.Cards {
			s += " " + r.Peer + "/" + r.State
		}
		out = append(out, s)
	}
	return out
}

func waitSwarm(t *testing.T, tab context.Context, what string, cond func(swarmView) bool) swarmView {
	t.Helper()
	var last swarmView
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(tab, 5*time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[swarmView](swarmViewJS))
		cancel()
		if err == nil {
			last = v
			if cond(v) {
				return v
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("swarm panel: %s: not seen after 15s (read error %v); it shows %q, averaging %q", what, err, last.layout(), last.Averaging)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// recorded reads the step records of a recorded metrics.jsonl.
func recorded(t *testing.T, path string) []metrics.StepRecord {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []metrics.StepRecord
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r metrics.StepRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s:%d: %v", path, i+1, err)
		}
		if r.Type == "" || r.Type == "step" {
			recs = append(recs, r)
		}
	}
	return recs
}

// TestBrowserSwarm replays the metrics stream of a real run of 2 stages ×
// 2 replicas on four WebRTC peers (testdata/swarm-2x2.jsonl; how to record
// it again is in testdata/swarm-2x2.toml) into the view, and then the
// replica events of a join, a demotion and a death as the runtime
// publishes them (PublishEvent, the path of every metrics event). The
// swarm panel must show the stages as two columns of two named cards
// with the runs's path and averaging traffic, move the joiner from
// syncing to training, mark the demoted replica, take the dead one out of
// its column, and show a tab opened afterwards the same swarm.
func TestBrowserSwarm(t *testing.T) {
	recs := recorded(t, filepath.Join("testdata", "swarm-2x2.jsonl"))
	if len(recs) != 8 {
		t.Fatalf("testdata has %d step records, want 8", len(recs))
	}
	b := webtest.NewBrowser(t)
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	srv.SetRun(web.RunInfo{Name: "swarm-2x2", Seed: 7, TotalSteps: 8, Start: time.Now()})
	srv.SetStatus("training")
	for _, r := range recs[:3] {
		srv.PublishStep(r)
	}
	tab := b.Tab()
	if err := webtest.Navigate(tab, hs.URL); err != nil {
		t.Fatal(err)
	}

	// The recorded run: replicas peer-0 and peer-2 hold stage 0, peer-1
	// and peer-3 stage 1 (workers are numbered replica-major).
	v := waitSwarm(t, tab, "2 columns of 2 training replicas", func(v swarmView) bool {
		return v.Shown && len(v.Columns) == 2 && len(v.Columns[0].Cards) == 2 && len(v.Columns[1].Cards) == 2
	})
	if want := []string{"stage 0: peer-0/training peer-2/training", "stage 1: peer-1/training peer-3/training"}; !reflect.DeepEqual(v.layout(), want) {
		t.Errorf("swarm shows %q, want %q", v.layout(), want)
	}
	if v.Sub != "2 stages × 2 replicas" {
		t.Errorf("panel title says %q", v.Sub)
	}
	// Every record of the run summed 344,780 bytes among the replicas.
	if !strings.Contains(v.Averaging, "344.8 kB a step") || !strings.Contains(v.Averaging, "mean 86.2 kB a step per replica") || !strings.Contains(v.Averaging, "/s") {
		t.Errorf("averaging traffic shown as %q; want 344.8 kB a step, its rate and 86.2 kB a replica", v.Averaging)
	}
	for _, c := range v.Columns {
		for _, r := range c.Cards {
			if r.Path != "host" || !strings.Contains(r.Text, "sends") || !strings.Contains(r.Text, "busy") {
				t.Errorf("card %s shows %q (path %q): want its path host, busy share and send rate", r.Peer, r.Text, r.Path)
			}
		}
	}

	// A fifth peer joins stage 1: it syncs from peer-1, its download is
	// done, a step passes without it, and it is admitted.
	srv.PublishEvent(metrics.Event{Kind: "replica_joining", Step: 4, WallSeconds: 0.3, Detail: map[string]any{"stage": 1, "peer": "peer-4", "from": "peer-1"}})
	v = waitSwarm(t, tab, "peer-4 syncing on stage 1", func(v swarmView) bool {
		c, st, ok := v.card("peer-4")
		return ok && st == 1 && c.State == "syncing"
	})
	if c, _, _ := v.card("peer-4"); !strings.Contains(c.Text, "downloading state from peer-1") {
		t.Errorf("syncing card says %q", c.Text)
	}
	srv.PublishEvent(metrics.Event{Kind: "state_download", Step: 4, WallSeconds: 0.35, Detail: map[string]any{"stage": 1, "peer": "peer-4", "from": "peer-1", "bytes": 3300000, "seconds": 0.42, "resumed": 1}})
	srv.PublishStep(recs[3])
	v = waitSwarm(t, tab, "peer-4's download done", func(v swarmView) bool {
		c, _, ok := v.card("peer-4")
		return ok && strings.Contains(c.Text, "state downloaded from peer-1: 3.30 MB in 0.42 s (resumed 1×)")
	})
	if c, _, _ := v.card("peer-4"); c.State != "syncing" {
		t.Errorf("peer-4 is %s after its download, before replica_joined; want syncing", c.State)
	}
	srv.PublishEvent(metrics.Event{Kind: "replica_joined", Step: 5, WallSeconds: 0.4, Detail: map[string]any{"stage": 1, "peer": "peer-4", "step": 5}})
	// From step 5 the records name peer-4 too (a copy of peer-3's stats),
	// and, as the runtime will, how many micro-batches each replica
	// computed; a dead replica is in no record after its death.
	micro := map[string]int{"peer-0": 2, "peer-2": 2, "peer-1": 2, "peer-3": 1, "peer-4": 1}
	withJoiner := func(r metrics.StepRecord, dead string) metrics.StepRecord {
		var out []metrics.StageStats
		for _, s := range r.Stages {
			if s.Peer == dead {
				continue
			}
			s.MicroBatches = micro[s.Peer]
			if s.Peer == "peer-0" && dead != "" {
				s.MicroBatches = 4
			}
			out = append(out, s)
			if s.Peer == "peer-3" {
				s.Peer, s.MicroBatches = "peer-4", micro["peer-4"]
				out = append(out, s)
			}
		}
		r.Stages = out
		return r
	}
	srv.PublishStep(withJoiner(recs[4], ""))
	v = waitSwarm(t, tab, "peer-4 training with a compute rate", func(v swarmView) bool {
		c, st, ok := v.card("peer-4")
		return ok && st == 1 && c.State == "training" && strings.Contains(c.Text, "micro-batches/s")
	})
	if c, _, _ := v.card("peer-4"); !strings.Contains(c.Text, "training since step 5") || !strings.Contains(c.Text, "1 micro-batch ") {
		t.Errorf("joined card says %q; want training since step 5 with 1 micro-batch this step", c.Text)
	}

	// peer-3 is demoted, then peer-2 dies.
	srv.PublishEvent(metrics.Event{Kind: "replica_demoted", Step: 6, WallSeconds: 0.5, Detail: map[string]any{"stage": 1, "peer": "peer-3", "reason": "3.1× slower than its stage's median"}})
	srv.PublishStep(withJoiner(recs[5], ""))
	waitSwarm(t, tab, "peer-3 marked slow", func(v swarmView) bool {
		c, _, ok := v.card("peer-3")
		return ok && c.Slow && strings.Contains(c.Text, "slow: half the micro-batches") && c.State == "training"
	})
	srv.PublishEvent(metrics.Event{Kind: "replica_dead", Step: 7, WallSeconds: 0.6, Detail: map[string]any{"stage": 0, "peer": "peer-2", "reason": "no heartbeat for 10 s", "step": 7}})
	for _, r := range recs[6:] {
		srv.PublishStep(withJoiner(r, "peer-2"))
	}
	v = waitSwarm(t, tab, "peer-2 out of stage 0", func(v swarmView) bool {
		_, _, there := v.card("peer-2")
		return !there && len(v.Columns) == 2 && len(v.Columns[0].Gone) == 1
	})
	if want := []string{"stage 0: peer-0/training", "stage 1: peer-1/training peer-3/training peer-4/training"}; !reflect.DeepEqual(v.layout(), want) {
		t.Errorf("after peer-2 died the swarm shows %q, want %q", v.layout(), want)
	}
	if g := v.Columns[0].Gone[0]; g != "peer-2 · dead at step 7 (no heartbeat for 10 s)" {
		t.Errorf("stage 0's departure line says %q", g)
	}
	if err := webtest.Screenshot(tab, filepath.Join(webtest.ArtifactDir(t), "web-swarm.png")); err != nil {
		t.Error(err)
	}

	// A tab opened now gets the same swarm from its snapshot, though it
	// saw none of the events live.
	tab2 := b.NewTab(t)
	if err := webtest.Navigate(tab2, hs.URL); err != nil {
		t.Fatal(err)
	}
	v2 := waitSwarm(t, tab2, "the same swarm in a second tab", func(v2 swarmView) bool { return reflect.DeepEqual(v2.layout(), v.layout()) })
	if c, _, _ := v2.card("peer-3"); !c.Slow {
		t.Errorf("second tab does not mark peer-3 slow: %q", c.Text)
	}
	if len(v2.Columns[0].Gone) != 1 || v2.Averaging != v.Averaging {
		t.Errorf("second tab shows departures %q and averaging %q; first tab %q and %q", v2.Columns[0].Gone, v2.Averaging, v.Columns[0].Gone, v.Averaging)
	}
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}
