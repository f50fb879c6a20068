package web_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

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
