package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/internal/runtime/launch"
	"github.com/narrowband/narrowband/signaling"
	"github.com/narrowband/narrowband/web"
	"github.com/narrowband/narrowband/web/webtest"
)

// webrtcFlags let Chromium reach peers on loopback: without the first it
// gathers no loopback candidates at all, without the second it hides its
// host candidates behind mDNS names (.local) that pion, with mDNS off on
// loopback runs, cannot resolve.
var webrtcFlags = []chromedp.ExecAllocatorOption{
	chromedp.Flag("allow-loopback-in-peer-connection", true),
	chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
}

var wasmOnce struct {
	sync.Once
	dir string
	err error
}

// wasmDir builds the tab's peer (cmd/nbwasm) once per test binary, as
// `make wasm` does, into a folder the web view serves it from.
func wasmDir(t testing.TB) string {
	t.Helper()
	wasmOnce.Do(func() {
		dir, err := os.MkdirTemp("", "narrowband-wasm-*")
		if err != nil {
			wasmOnce.err = err
			return
		}
		wasmOnce.dir = dir
		root, err := exec.Command("go", "env", "GOROOT").Output()
		if err != nil {
			wasmOnce.err = fmt.Errorf("go env GOROOT: %w", err)
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s", "-o", filepath.Join(dir, "narrowband.wasm"), "github.com/narrowband/narrowband/cmd/nbwasm")
		cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
		if out, err := cmd.CombinedOutput(); err != nil {
			wasmOnce.err = fmt.Errorf("build the wasm peer: %v\n%s", err, out)
			return
		}
		js, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(root)), "lib", "wasm", "wasm_exec.js"))
		if err != nil {
			wasmOnce.err = err
			return
		}
		wasmOnce.err = os.WriteFile(filepath.Join(dir, "wasm_exec.js"), js, 0o644)
	})
	if wasmOnce.err != nil {
		t.Fatal(wasmOnce.err)
	}
	return wasmOnce.dir
}

// contribState is #contribute's data attributes.
type contribState struct {
	Hidden bool    `json:"hidden"`
	State  string  `json:"state"`
	Stage  string  `json:"stage"`
	Steps  int     `json:"steps"`
	Sent   float64 `json:"sent"`
	Rate   float64 `json:"rate"`
	Text   string  `json:"text"`
	Offer  string  `json:"offer"`
}

func readContrib(tab context.Context) (contribState, error) {
	ctx, cancel := context.WithTimeout(tab, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[contribState](`(() => { const b = document.getElementById('contribute'); const d = b.dataset;
		return {hidden: b.hidden, state: d.state || '', stage: d.stage || '', steps: +(d.steps || 0), sent: +(d.sent || 0), rate: +(d.rate || 0),
		        text: document.getElementById('contrib-progress').textContent, offer: document.getElementById('contrib-offer').textContent}; })()`))
}

func waitContrib(tab context.Context, timeout time.Duration, what string, cond func(contribState) bool) (contribState, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := readContrib(tab)
		if err == nil && cond(s) {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("waiting %v for %s: last seen %+v (err %v)", timeout, what, s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// browserRun is a WebRTC run whose web view takes visitors' tabs, with a
// browser on its page.
type browserRun struct {
	out  string
	url  string
	done chan error
	sum  *metrics.Summary
	b    *webtest.Browser
	tab  context.Context
}

func startBrowserRun(t testing.TB, c config.Config) *browserRun {
	t.Helper()
	b := webtest.NewBrowser(t, webrtcFlags...)
	srv := web.New(web.Options{WasmDir: wasmDir(t)})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	r := &browserRun{out: t.TempDir(), url: hs.URL, done: make(chan error, 1), b: b, tab: b.Tab()}
	go func() {
		sum, err := Run(ctx, Options{Config: c, Out: r.out, Web: srv})
		r.sum = sum
		r.done <- err
	}()
	stop := sync.OnceFunc(func() {
		cancel()
		<-r.done
	})
	t.Cleanup(stop)
	return r
}

// contribute opens the run's page, waits for the offer and clicks it.
func (r *browserRun) contribute(t testing.TB, tab context.Context) contribState {
	t.Helper()
	if err := webtest.Navigate(tab, r.url); err != nil {
		t.Fatal(err)
	}
	st, err := waitContrib(tab, 60*time.Second, "the Contribute offer", func(s contribState) bool { return s.State == "offered" && !s.Hidden })
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.Click("#contrib-button")); err != nil {
		t.Fatal(err)
	}
	return st
}

func (r *browserRun) wait(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("run with a tab: %v", err)
		}
	case <-time.After(timeout):
		t.Fatalf("run with a tab did not finish in %v", timeout)
	}
}

// stageRate is tokens per busy second of stage over a run's steps after
// the first (which includes set-up), and who computed it last.
func stageRate(t testing.TB, dir string, stage int, tokensPerStep int) (float64, string) {
	t.Helper()
	recs, err := metrics.ReadJSONL(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var busy float64
	var n int
	peer := ""
	for _, r := range recs {
		if r.Step <= 1 {
			continue
		}
		for _, s := range r.Stages {
			if s.Stage == stage {
				busy += s.BusySeconds
				n++
				peer = s.Peer
			}
		}
	}
	if busy == 0 {
		return 0, peer
	}
	return float64(n*tokensPerStep) / busy, peer
}

func contributeConfig(t *testing.T) config.Config {
	c := tinyConfig(t)
	c.Run.Steps = 12
	c.Pipeline.Stages = 2
	c.Pipeline.Transport = "webrtc"
	c.Train.Threads = 1
	c.Web.Contribute = true
	return c
}

// TestBrowserTabTrainsAStage: a visitor opens the page of a running WebRTC
// run whose stage 1 is vacant, clicks Contribute, and its tab (the stage
// peer compiled to wasm, in headless Chromium, over Chromium's own WebRTC)
// computes that stage: the run's losses equal the same run with a native
// peer on that stage (within 1e-5 against the assembly kernels; bit for bit
// with -tags purego, where both run the same portable Go kernels), and the
// tab shows what it did. Both runs' stage-1
// rates are logged (docs/browser.md).
func TestBrowserTabTrainsAStage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wasm peer and starts a browser")
	}
	c := contributeConfig(t)
	native := t.TempDir()
	runTiny(t, c, native)
	want := losses(t, native)

	c.Pipeline.LocalPeers = 1 // stage 1 waits for the tab
	r := startBrowserRun(t, c)
	offer := r.contribute(t, r.tab)
	if !strings.Contains(offer.Offer, "stage 2 of 2") {
		t.Errorf("the offer reads %q, want it to name stage 2 of 2", offer.Offer)
	}
	r.wait(t, 4*time.Minute)
	got := losses(t, r.out)
	sameLosses(t, "tab on stage 1", got, "native peer", want)
	worst := 0.0
	for i := range want {
		if i < len(got) {
			worst = max(worst, math.Abs(got[i]-want[i])/math.Abs(want[i]))
		}
	}
	t.Logf("largest relative loss difference, tab vs native peer: %.3g over %d values", worst, len(want))
	if portableKernels && worst != 0 {
		// The same Go kernels compiled for wasm and for this CPU add in
		// the same order: anything but bit-identical is a bug.
		t.Errorf("with -tags purego the tab's losses differ from the native peer's (relative %.3g); want bit-identical", worst)
	}

	st, err := waitContrib(r.tab, 10*time.Second, "the tab's final count", func(s contribState) bool { return s.State == "done" && s.Steps >= c.Run.Steps })
	if err != nil {
		t.Error(err)
	}
	if err := webtest.Screenshot(r.tab, filepath.Join(webtest.ArtifactDir(t), "contribute.png")); err != nil {
		t.Error(err)
	}
	if st.Stage != "1" || st.Sent <= 0 || st.Rate <= 0 {
		t.Errorf("the tab shows stage %q, %v bytes sent, %v tokens/s; want stage 1 and both counted", st.Stage, st.Sent, st.Rate)
	}
	tok := c.Train.BatchSize * c.Model.BlockSize
	tabRate, who := stageRate(t, r.out, 1, tok)
	if !strings.HasPrefix(who, "tab-") {
		t.Errorf("stage 1 was computed by %q, want the tab (tab-…)", who)
	}
	nativeRate, _ := stageRate(t, native, 1, tok)
	stage0, _ := stageRate(t, r.out, 0, tok)
	t.Logf("stage 1: tab %.0f tokens/s, native peer %.0f (ratio %.2f); stage 0 native in the tab's run: %.0f; the tab saw: %s",
		tabRate, nativeRate, tabRate/nativeRate, stage0, st.Text)
	if errs := r.b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}

// TestClosedTabIsTakenOverBySpare: a tab computes stage 1 and is closed
// mid-run; the run goes on, a native spare takes the stage over, and it
// finishes every step. Closing the tab is a clean leave: the run learns of
// it from the links' ends, not by waiting out faults.peer_timeout
// (detection is timed from the close to the run's peer_dead event).
func TestClosedTabIsTakenOverBySpare(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wasm peer and starts a browser")
	}
	c := contributeConfig(t)
	c.Run.Steps = 400
	c.Pipeline.LocalPeers = 1
	c.Faults.PeerTimeout = 20
	c.Faults.SnapshotEvery = 5
	r := startBrowserRun(t, c)
	// The contributing tab is a tab of its own, so closing it leaves the
	// browser (and the page's first tab) running.
	tab, closeTab := chromedp.NewContext(r.b.Tab())
	defer closeTab()
	// The first action binds the tab to the context it runs under: tab
	// itself, not a timeout derived from it.
	if _, err := chromedp.Run(tab, chromedp.Title()); err != nil {
		t.Fatal(err)
	}
	r.contribute(t, tab)
	if _, err := waitContrib(tab, 2*time.Minute, "the tab computing 10 steps", func(s contribState) bool { return s.State == "computing" && s.Steps >= 10 }); err != nil {
		t.Fatal(err)
	}
	// With stage 1 taken, the next visitor is offered a spare's place.
	if resp, err := http.Get(r.url + "/api/contribute"); err != nil {
		t.Error(err)
	} else {
		var next web.Contribute
		if err := json.NewDecoder(resp.Body).Decode(&next); err != nil || next.Stage != -1 {
			t.Errorf("with every stage held the next visitor is offered stage %d (%v), want -1 (a spare)", next.Stage, err)
		}
		resp.Body.Close()
	}
	// The spare: a native peer that joins with the run's secret.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sig struct {
		URL        string `json:"url"`
		SecretFile string `json:"secret_file"`
	}
	b, err := os.ReadFile(filepath.Join(r.out, "signal.json"))
	if err != nil || json.Unmarshal(b, &sig) != nil {
		t.Fatalf("signal.json: %v", err)
	}
	spareDone := make(chan error, 1)
	go func() {
		spareDone <- launch.RunPeer(ctx, launch.PeerArgs{Signal: sig.URL, SecretFile: sig.SecretFile, ID: "spare-native", Loopback: true, KeyFile: filepath.Join(t.TempDir(), "spare.key")},
			slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	}()
	// The spare joins signaling in milliseconds; the run looks for spares
	// in the room when it needs one.
	time.Sleep(2 * time.Second)
	before, err := readContrib(tab)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := eventKinds(r.out); n["peer_dead"] > 0 {
		t.Fatal("the tab was declared dead before it was closed")
	}
	closed := time.Now()
	closeTab()
	detect := untilEvent(t, r.out, "peer_dead", time.Minute)
	r.wait(t, 4*time.Minute)
	sum := r.sum
	if len(sum.FaultLog) != 1 {
		t.Fatalf("fault log %+v: want the one leave of the tab", sum.FaultLog)
	}
	f := sum.FaultLog[0]
	if f.Stage != 1 || !strings.HasPrefix(f.Peer, "tab-") || f.ReplacedBy != "spare-native" {
		t.Errorf("fault %+v: want stage 1's tab replaced by spare-native", f)
	}
	if f.Step <= before.Steps {
		t.Errorf("the fault is at step %d, but the tab had finished %d steps when it was closed", f.Step, before.Steps)
	}
	if detect.Seconds() > c.Faults.PeerTimeout/2 {
		t.Errorf("the run took %.1f s to notice the closed tab; a clean leave should not wait for the peer timeout (%g s)", detect.Seconds(), c.Faults.PeerTimeout)
	}
	recs, err := metrics.ReadJSONL(filepath.Join(r.out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	last := recs[len(recs)-1]
	if last.Step != c.Run.Steps {
		t.Errorf("last step %d, want %d", last.Step, c.Run.Steps)
	}
	for _, s := range last.Stages {
		if s.Stage == 1 && s.Peer != "spare-native" {
			t.Errorf("stage 1 finished on %q, want spare-native", s.Peer)
		}
	}
	js, _ := json.Marshal(f)
	t.Logf("closed after %d steps; the run saw the tab gone %.2f s after and finished %.1f s after; fault: %s", before.Steps, detect.Seconds(), time.Since(closed).Seconds(), js)
	cancel()
	<-spareDone
}

// TestPageWithoutContributeCannotJoin: the page of a WebRTC run that did
// not set web.contribute shows no Contribute control and gets no token,
// and even the room's real join token (made here from the run's secret)
// is refused by its signaling server, while the run waits for a peer.
func TestPageWithoutContributeCannotJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	c := contributeConfig(t)
	c.Web.Contribute = false
	c.Pipeline.LocalPeers = 1 // the run waits for a second peer
	r := startBrowserRun(t, c)
	var sig struct {
		URL        string `json:"url"`
		SecretFile string `json:"secret_file"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(r.out, "signal.json"))
		if err == nil && json.Unmarshal(b, &sig) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run wrote no signal.json")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := webtest.Navigate(r.tab, r.url); err != nil {
		t.Fatal(err)
	}
	if _, err := webtest.WaitPage(r.tab, 30*time.Second, func(s webtest.PageState) bool { return s.Connected }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the page's question to /api/contribute has been answered
	st, err := readContrib(r.tab)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Hidden || st.State != "" {
		t.Errorf("the page shows the Contribute control (hidden %v, state %q) for a run without web.contribute", st.Hidden, st.State)
	}
	ctx, cancel := context.WithTimeout(r.tab, 10*time.Second)
	defer cancel()
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch('api/contribute').then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || status != 204 {
		t.Errorf("api/contribute answered %d (%v), want 204 (no offer, no token)", status, err)
	}
	secret, err := launch.ReadSecret(sig.SecretFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := signaling.DeriveKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	room := sig.URL[strings.LastIndexByte(sig.URL, '/')+1:]
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	cl, err := signaling.DialOptions(dctx, sig.URL, "tab-forged", "", signaling.ClientOptions{JoinToken: signaling.JoinToken(key, room)})
	if err == nil {
		cl.Close()
		t.Fatal("the signaling server of a run without web.contribute admitted a join token")
	}
	if !errors.Is(err, signaling.ErrAuth) {
		t.Errorf("join token refused with %v, want ErrAuth", err)
	}
	t.Logf("refused as it should be: %v", err)
}

// BenchmarkTabStage measures a tab's tokens/s on a stage against a native
// peer's on the same stage (the same config run twice), and the other
// stage's native rate within the tab's run, on a model big enough that the
// compute, not the set-up, dominates each step:
//
//	go test -run '^$' -bench TabStage -benchtime 1x ./internal/runtime/trainer/
func BenchmarkTabStage(b *testing.B) {
	c := tinyConfig(b)
	c.Model = config.Model{NLayer: 4, NHead: 4, NEmbd: 128, BlockSize: 64, VocabSize: 256, Bias: true}
	c.Train.BatchSize, c.Train.MicroBatches = 8, 2
	c.Run.Steps = 20
	c.Train.EvalInterval = 100
	c.Pipeline.Stages = 2
	c.Pipeline.Transport = "webrtc"
	c.Train.Threads = 1
	c.Web.Contribute = true
	if err := c.Validate(); err != nil {
		b.Fatal(err)
	}
	tok := c.Train.BatchSize * c.Model.BlockSize
	for b.Loop() {
		native := b.TempDir()
		if _, err := Run(context.Background(), Options{Config: c, Out: native}); err != nil {
			b.Fatal(err)
		}
		nativeRate, _ := stageRate(b, native, 1, tok)
		cc := c
		cc.Pipeline.LocalPeers = 1
		r := startBrowserRun(b, cc)
		r.contribute(b, r.tab)
		r.wait(b, 10*time.Minute)
		tabRate, who := stageRate(b, r.out, 1, tok)
		stage0, _ := stageRate(b, r.out, 0, tok)
		if !strings.HasPrefix(who, "tab-") {
			b.Fatalf("stage 1 computed by %q, not the tab", who)
		}
		b.ReportMetric(tabRate, "tab-tokens/s")
		b.ReportMetric(nativeRate, "native-tokens/s")
		b.ReportMetric(tabRate/nativeRate, "tab/native")
		b.ReportMetric(stage0, "stage0-native-tokens/s")
	}
}

// TestTabSpareTakesOverAKilledStage: with every stage held by a native
// peer, a tab that clicks Contribute is offered a spare's place and waits;
// when stage 1's peer is killed the tab takes the stage over from the last
// snapshot and finishes the run, whose held-out loss equals that of the
// same run without the kill (the redone steps compute the same thing).
func TestTabSpareTakesOverAKilledStage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wasm peer, starts a browser and kills a peer")
	}
	c := contributeConfig(t)
	c.Run.Steps = 160
	c.Train.EvalInterval = 40
	// Slow enough links that the tab has joined before the kill.
	c.Network.LatencyMs = 30
	clean := t.TempDir()
	cleanSum := runTiny(t, c, clean)

	c.Faults.PeerTimeout = 3
	c.Faults.SnapshotEvery = 10
	c.Faults.Events = []config.FaultEvent{{AtStep: 120, Kind: "kill", Stage: 1}}
	r := startBrowserRun(t, c)
	offer := r.contribute(t, r.tab)
	if !strings.Contains(offer.Offer, "spare") {
		t.Errorf("with every stage held the offer reads %q, want a spare's place", offer.Offer)
	}
	if _, err := waitContrib(r.tab, time.Minute, "the tab joining", func(s contribState) bool { return s.State == "joined" }); err != nil {
		t.Fatal(err)
	}
	r.wait(t, 5*time.Minute)
	sum := r.sum
	if len(sum.FaultLog) != 1 {
		t.Fatalf("fault log %+v: want the one kill", sum.FaultLog)
	}
	f := sum.FaultLog[0]
	if f.Kind != "peer_dead" || f.Stage != 1 || !strings.HasPrefix(f.ReplacedBy, "tab-") {
		t.Errorf("fault %+v: want stage 1's peer dead and replaced by the tab", f)
	}
	if gap := math.Abs(sum.FinalValLoss-cleanSum.FinalValLoss) / cleanSum.FinalValLoss; gap > 1e-5 {
		t.Errorf("held-out loss %.7f vs %.7f without the kill (relative %.2g), want within 1e-5", sum.FinalValLoss, cleanSum.FinalValLoss, gap)
	}
	st, err := waitContrib(r.tab, 10*time.Second, "the tab's final count", func(s contribState) bool { return s.State == "done" })
	if err != nil {
		t.Error(err)
	}
	js, _ := json.Marshal(f)
	t.Logf("kill at step 120: %s; held-out loss %.7f vs %.7f clean; the tab: %s", js, sum.FinalValLoss, cleanSum.FinalValLoss, st.Text)
}

// TestFrozenTabIsReplacedBySpare: a tab the browser freezes (as it does to
// a background tab it wants to save power on: Page.setWebLifecycleState
// "frozen", which stops its scripts and its worker but not its links) is a
// silent peer, and the run's existing rules handle it: it is declared dead
// after faults.peer_timeout (the time is logged) and a native spare takes
// its stage over.
func TestFrozenTabIsReplacedBySpare(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wasm peer and starts a browser")
	}
	c := contributeConfig(t)
	c.Run.Steps = 400
	c.Pipeline.LocalPeers = 1
	c.Faults.PeerTimeout = 3
	c.Faults.SnapshotEvery = 5
	r := startBrowserRun(t, c)
	tab, closeTab := chromedp.NewContext(r.b.Tab())
	defer closeTab()
	if _, err := chromedp.Run(tab, chromedp.Title()); err != nil {
		t.Fatal(err)
	}
	r.contribute(t, tab)
	if _, err := waitContrib(tab, 2*time.Minute, "the tab computing 10 steps", func(s contribState) bool { return s.State == "computing" && s.Steps >= 10 }); err != nil {
		t.Fatal(err)
	}
	stopSpare := startSpare(t, r.out)
	defer stopSpare()
	time.Sleep(2 * time.Second)
	if _, err := chromedp.Call(tab, page.SetWebLifecycleState, page.SetWebLifecycleStateParams{State: page.SetWebLifecycleStateStateFrozen}); err != nil {
		t.Fatalf("freeze the tab: %v", err)
	}
	detect := untilEvent(t, r.out, "peer_dead", time.Minute)
	r.wait(t, 4*time.Minute)
	sum := r.sum
	if len(sum.FaultLog) != 1 {
		t.Fatalf("fault log %+v: want the frozen tab declared dead once", sum.FaultLog)
	}
	f := sum.FaultLog[0]
	if f.Kind != "peer_dead" || f.Stage != 1 || !strings.HasPrefix(f.Peer, "tab-") || f.ReplacedBy != "spare-native" {
		t.Errorf("fault %+v: want stage 1's frozen tab dead and replaced by spare-native", f)
	}
	recs, err := metrics.ReadJSONL(filepath.Join(r.out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if last := recs[len(recs)-1]; last.Step != c.Run.Steps {
		t.Errorf("last step %d, want %d", last.Step, c.Run.Steps)
	}
	js, _ := json.Marshal(f)
	t.Logf("the run declared the frozen tab dead %.2f s after the freeze (faults.peer_timeout = %g s): %s", detect.Seconds(), c.Faults.PeerTimeout, js)
}

// startSpare starts a native peer (`narrowband peer`'s body) that joins
// the run in out with its secret, and returns a function that stops it.
func startSpare(t *testing.T, out string) func() {
	t.Helper()
	var sig struct {
		URL        string `json:"url"`
		SecretFile string `json:"secret_file"`
	}
	b, err := os.ReadFile(filepath.Join(out, "signal.json"))
	if err != nil || json.Unmarshal(b, &sig) != nil {
		t.Fatalf("signal.json: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	key := filepath.Join(t.TempDir(), "spare.key")
	go func() {
		done <- launch.RunPeer(ctx, launch.PeerArgs{Signal: sig.URL, SecretFile: sig.SecretFile, ID: "spare-native", Loopback: true, KeyFile: key},
			slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	}()
	return sync.OnceFunc(func() {
		cancel()
		<-done
	})
}

// untilEvent returns how long it took, from now, until the run in dir
// logged an event of kind.
func untilEvent(t *testing.T, dir, kind string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if n, _ := eventKinds(dir); n[kind] > 0 {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s event within %v", kind, timeout)
	return 0
}

// TestTabJoinsAsReplica: in a run of 2 stages × 2 replicas whose last
// worker (stage 1, replica 1) is left to a visitor, the offer says so, the
// tab takes it, and the run's losses equal the same run on four native
// peers: a tab is as good a replica as it is a stage.
func TestTabJoinsAsReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wasm peer and starts a browser")
	}
	c := contributeConfig(t)
	c.Run.Steps = 10
	c.Train.BatchSize = 8
	c.Train.MicroBatches = 4
	c.Pipeline.Replicas = 2
	native := t.TempDir()
	runTiny(t, c, native)
	want := losses(t, native)

	c.Pipeline.LocalPeers = 3
	r := startBrowserRun(t, c)
	offer := r.contribute(t, r.tab)
	if !strings.Contains(offer.Offer, "replica 2 of 2 of stage 2 of 2") {
		t.Errorf("the offer reads %q, want replica 2 of 2 of stage 2 of 2", offer.Offer)
	}
	r.wait(t, 4*time.Minute)
	sameLosses(t, "tab as stage 1's second replica", losses(t, r.out), "four native peers", want)
	recs, err := metrics.ReadJSONL(filepath.Join(r.out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	tabs := 0
	for _, s := range recs[len(recs)-1].Stages {
		if strings.HasPrefix(s.Peer, "tab-") {
			tabs++
			if s.Stage != 1 {
				t.Errorf("the tab computed stage %d, want 1", s.Stage)
			}
		}
	}
	if tabs != 1 {
		t.Errorf("%d of the last step's stage records are the tab's, want 1", tabs)
	}
}
