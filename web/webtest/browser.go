package webtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ArtifactDir is where tests put screenshots: $NARROWBAND_ARTIFACTS when
// set (CI uploads it), otherwise a temporary directory of the test.
func ArtifactDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("NARROWBAND_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("create artifact dir from NARROWBAND_ARTIFACTS: %v", err)
		}
		return d
	}
	return t.TempDir()
}

// Browser is a headless Chromium started for one test. Tabs opened with
// NewTab share it; everything stops when the test ends.
type Browser struct {
	ctx context.Context // the browser's first tab; parent of every tab

	mu      sync.Mutex
	console []string // errors and exceptions from any tab
}

// NewBrowser starts Debian's chromium headless with a fresh profile. If
// chromium is not installed the test is skipped, unless CI=true, where a
// missing browser fails the test: CI must install it
// (apt-get install -y chromium). Extra options are added to the standard
// ones, e.g. chromedp.Flag("host-resolver-rules", "MAP evil.example
// 127.0.0.1") to point a foreign name at a local server.
func NewBrowser(t testing.TB, extra ...chromedp.ExecAllocatorOption) *Browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium not found but CI=true: install it with `apt-get install -y chromium` (%v)", err)
		}
		t.Skipf("chromium not found, skipping browser test (install it with `apt-get install -y chromium`): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// A second tab is a background tab: keep its timers running.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1440, 1100),
	}
	opts = append(opts, extra...)
	// The first Run starts the browser and binds it to ctx (no timeout).
	// On this 2-core machine under load Chromium has crashed while starting
	// (crashpad output, "chrome failed to start" after 0.5 s; 2 of ~14
	// loaded runs of the test suites side by side). That says nothing about
	// the page under test, so a second start is allowed before failing.
	var ctx context.Context
	for attempt := 1; ; attempt++ {
		// A fresh profile each time: a crashed start may leave its lock behind.
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(opts, chromedp.UserDataDir(t.TempDir()))...)
		c, cancel := chromedp.NewContext(actx)
		_, err := chromedp.Run(c, chromedp.Title())
		if err == nil {
			ctx = c
			t.Cleanup(func() {
				cctx, ccancel := context.WithTimeout(c, 10*time.Second)
				defer ccancel()
				_ = chromedp.Cancel(cctx)
				cancel()
				cancelAlloc()
			})
			break
		}
		cancel()
		cancelAlloc()
		if attempt == 2 {
			t.Fatalf("start chromium %s (twice): %v", path, err)
		}
		t.Logf("start chromium %s: %v; trying once more", path, err)
	}
	b := &Browser{ctx: ctx}
	b.watchConsole(ctx)
	return b
}

// watchConsole records the tab's errors, uncaught exceptions and CSP
// violations (a CSP violation means the page tried to load something from
// outside, which would break offline use).
func (b *Browser) watchConsole(ctx context.Context) {
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError {
				b.mu.Lock()
				b.console = append(b.console, m.String())
				b.mu.Unlock()
			}
		}
	}()
}

// ConsoleErrors returns the console errors seen so far in any tab.
func (b *Browser) ConsoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.console...)
}

// Tab is a context for one browser tab, for chromedp.Run.
func (b *Browser) Tab() context.Context { return b.ctx }

// NewTab opens another tab in the same browser.
func (b *Browser) NewTab(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	if _, err := chromedp.Run(ctx, chromedp.Title()); err != nil {
		t.Fatalf("open a new chromium tab: %v", err)
	}
	b.watchConsole(ctx)
	return ctx
}

// PageState is what the page shows, read from its stable element ids.
type PageState struct {
	Step      int    `json:"step"`       // body[data-step]: latest step rendered
	FirstStep int    `json:"first_step"` // oldest step the loss chart holds
	Loss      string `json:"loss"`       // #loss-value text
	StepText  string `json:"step_text"`  // #step-value text
	Points    int    `json:"points"`     // #loss-chart[data-points]
	ValPoints int    `json:"val_points"` // #loss-chart[data-val-points]
	Spans     int    `json:"spans"`      // #timeline[data-spans]: spans drawn
	Versions  int    `json:"versions"`   // #timeline[data-versions]: weight versions shown (async)
	Stashes   int    `json:"stashes"`    // #timeline[data-stashes]: stash marks drawn
	Drops     int    `json:"drops"`      // #timeline[data-drops]: drop marks drawn
	Links     int    `json:"links"`      // #links[data-links]: links listed
	LinkRows  int    `json:"link_rows"`  // rows in #links tbody
	Stages    int    `json:"stages"`     // #stages[data-stages]: stage bars
	Peers     int    `json:"peers"`      // rows in #peers tbody with a peer
	Swarm     int    `json:"swarm"`      // stage columns in the swarm panel; 0 while it is hidden
	Replicas  int    `json:"replicas"`   // replica cards in the swarm panel
	// Averaging is the swarm panel's gradient-sum line (#swarm-avg), and
	// AveragingBytes the bytes a step it shows (its data-bytes).
	Averaging      string `json:"averaging"`
	AveragingBytes int64  `json:"averaging_bytes"`
	RunName        string `json:"run_name"`
	Status         string `json:"status"`
	Connected      bool   `json:"connected"`
}

const pageStateJS = `(() => {
  const q = (s) => document.querySelector(s);
  const n = (v) => Number(v || 0);
  const st = window.narrowband ? window.narrowband.state : null;
  return {
    step: n(document.body.dataset.step),
    first_step: st && st.steps.length ? st.steps[0].step : 0,
    loss: q('#loss-value').textContent,
    step_text: q('#step-value').textContent,
    points: n(q('#loss-chart').dataset.points),
    val_points: n(q('#loss-chart').dataset.valPoints),
    spans: n(q('#timeline').dataset.spans),
    versions: n(q('#timeline').dataset.versions),
    stashes: n(q('#timeline').dataset.stashes),
    drops: n(q('#timeline').dataset.drops),
    links: n(q('#links').dataset.links),
    link_rows: q('#links tbody').querySelectorAll('tr:not(:has(.empty))').length,
    stages: q('#stages').querySelectorAll('.stage-row').length,
    peers: q('#peers tbody').querySelectorAll('tr:not(:has(.empty))').length,
    swarm: q('#swarm-panel') && !q('#swarm-panel').hidden ? n(q('#swarm').dataset.columns) : 0,
    replicas: q('#swarm') ? q('#swarm').querySelectorAll('.replica').length : 0,
    averaging: q('#swarm-avg') ? q('#swarm-avg').textContent : '',
    averaging_bytes: q('#swarm-avg') ? n(q('#swarm-avg').dataset.bytes) : 0,
    run_name: q('#run-name').textContent,
    status: q('#status').textContent,
    connected: q('#conn').classList.contains('live'),
  };
})()`

// ReadPage reads the page's state in the tab.
func ReadPage(tab context.Context) (PageState, error) {
	ctx, cancel := context.WithTimeout(tab, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[PageState](pageStateJS))
}

// WaitPage polls the page until cond holds or the timeout passes, and
// returns the last state seen (for the error message).
func WaitPage(tab context.Context, timeout time.Duration, cond func(PageState) bool) (PageState, error) {
	deadline := time.Now().Add(timeout)
	var last PageState
	var lastErr error
	for {
		st, err := ReadPage(tab)
		if err == nil {
			last = st
			if cond(st) {
				return st, nil
			}
		}
		lastErr = err
		if time.Now().After(deadline) {
			if lastErr != nil {
				return last, fmt.Errorf("page condition not met after %v (last read error: %w); last state %+v", timeout, lastErr, last)
			}
			return last, fmt.Errorf("page condition not met after %v; last state %+v", timeout, last)
		}
		select {
		case <-tab.Done():
			return last, tab.Err()
		case <-time.After(150 * time.Millisecond):
		}
	}
}

// Screenshot saves a full-page PNG of the tab to path.
func Screenshot(tab context.Context, path string) error {
	ctx, cancel := context.WithTimeout(tab, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("screenshot dir: %w", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return fmt.Errorf("write screenshot: %w", err)
	}
	return nil
}

// WatchOptions tunes Watch.
type WatchOptions struct {
	WantSteps  int           // wait until the page has rendered this step
	Screenshot string        // PNG path; "" for none
	Timeout    time.Duration // default: the test's deadline less 15s, or 3 minutes
	// A single-stage run has no links and may publish no spans; say so
	// here, otherwise empty link or timeline panels fail the watch.
	AllowNoLinks, AllowNoTimeline bool
	// StayOnPage keeps the tab on the page after Watch returns (it then
	// keeps an /events request open until web.Server.Close).
	StayOnPage bool
}

// Result is what Watch saw.
type Result struct {
	First, Last PageState
	Screenshot  string
}

// WatchRun opens url in a fresh headless browser and checks what an
// observer of a run cares about: the page connects, the shown loss changes
// as steps advance until step wantSteps is rendered, the loss chart has a
// point per step so far, and the links, stage and timeline panels have
// content. It saves a screenshot to screenshotPath (if not "") and fails
// on any console error. Use it in a test of a real training run.
//
// When it returns, the tab has left the page, so the run's HTTP server
// can be closed; a tab still open on the page keeps its /events request
// open until web.Server.Close is called.
func WatchRun(t testing.TB, url string, wantSteps int, screenshotPath string) Result {
	t.Helper()
	return NewBrowser(t).Watch(t, url, WatchOptions{WantSteps: wantSteps, Screenshot: screenshotPath})
}

// Watch is WatchRun in this browser's first tab, with options.
func (b *Browser) Watch(t testing.TB, url string, o WatchOptions) Result {
	t.Helper()
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Minute
		if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
			if dl, ok := d.Deadline(); ok {
				timeout = time.Until(dl) - 15*time.Second
			}
		}
	}
	if o.WantSteps < 2 {
		o.WantSteps = 2
	}
	tab := b.Tab()
	nctx, cancel := context.WithTimeout(tab, 30*time.Second)
	_, err := chromedp.Run(nctx, chromedp.Navigate(url))
	cancel()
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	first, err := WaitPage(tab, timeout, func(s PageState) bool { return s.Step >= 1 && s.Loss != "–" })
	if err != nil {
		t.Fatalf("waiting for the first step on %s: %v", url, err)
	}
	last, err := WaitPage(tab, timeout, func(s PageState) bool {
		return s.Step >= o.WantSteps && s.Loss != first.Loss && s.Points > 0 &&
			(o.AllowNoLinks || (s.Links > 0 && s.LinkRows > 0)) &&
			(o.AllowNoTimeline || s.Spans > 0)
	})
	if err != nil {
		t.Fatalf("waiting for step %d with a changed loss (first: step %d loss %s): %v", o.WantSteps, first.Step, first.Loss, err)
	}
	// Every step so far is on the chart unless the history was thinned.
	if last.Points < min(last.Step, 1000)/2 {
		t.Errorf("loss chart has %d points at step %d; want about one per step", last.Points, last.Step)
	}
	if last.Stages == 0 && !o.AllowNoLinks {
		t.Errorf("stage utilization panel is empty at step %d", last.Step)
	}
	if !last.Connected {
		t.Errorf("page says it is not connected to the live stream")
	}
	res := Result{First: first, Last: last}
	if o.Screenshot != "" {
		if err := Screenshot(tab, o.Screenshot); err != nil {
			t.Errorf("%v", err)
		} else {
			res.Screenshot = o.Screenshot
			t.Logf("web view screenshot: %s", o.Screenshot)
		}
	}
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("browser console errors:\n%s", strings.Join(errs, "\n"))
	}
	// Leave the page so its event stream closes: an httptest.Server's
	// Close waits for open requests, and the browser lives until the
	// test's cleanup, after the test's deferred calls.
	if !o.StayOnPage {
		if err := Navigate(tab, "about:blank"); err != nil {
			t.Errorf("leave the page: %v", err)
		}
	}
	t.Logf("web view: step %s, loss %s → %s, %d chart points, %d spans, %d links, %d stages",
		last.StepText, first.Loss, last.Loss, last.Points, last.Spans, last.Links, last.Stages)
	return res
}

// Navigate loads url in the tab and waits for the page to load.
func Navigate(tab context.Context, url string) error {
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		return fmt.Errorf("open %s: %w", url, err)
	}
	return nil
}
