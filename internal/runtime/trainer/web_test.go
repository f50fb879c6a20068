package trainer

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/web"
	"github.com/narrowband/narrowband/web/webtest"
)

// TestWebViewOfRealRun: headless Chromium watches the live view of a real
// 2-stage training run, sees the loss change as steps advance and every
// panel filled, and saves a screenshot.
func TestWebViewOfRealRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	c := tinyConfig(t)
	c.Run.Steps = 400
	c.Model.NLayer = 2
	c.Pipeline.Stages = 2
	c.Train.EvalInterval = 5
	c.Network.BandwidthMbps = 20
	c.Network.LatencyMs = 5
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	out := t.TempDir()
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Options{Config: c, Out: out, Web: srv})
		done <- err
	}()
	// Registered after TempDir, so it runs before the folder is removed,
	// also when WatchRun skips (no browser): the run must stop writing
	// into it first.
	stop := sync.OnceFunc(func() {
		cancel()
		<-done
	})
	t.Cleanup(stop)
	res := webtest.WatchRun(t, hs.URL, 12, filepath.Join(webtest.ArtifactDir(t), "real-run.png"))
	t.Logf("browser saw %+v", res)
	stop() // before the deferred closes of the view it publishes to
}

// TestWebViewOfReplicaRun: the swarm panel of a 2 stages × 2 replicas
// run whose sum is int8-coded shows the replicas' sum bytes of the latest
// step (the step records' replica_bytes) and how many times fewer than
// fp32's they are.
func TestWebViewOfReplicaRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	c := tinyConfig(t)
	c.Run.Steps = 400
	c.Pipeline.Stages = 2
	c.Pipeline.Replicas = 2
	c.Compression.Replicas.Method = compression.ReduceInt8
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	out := t.TempDir()
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Options{Config: c, Out: out, Web: srv})
		done <- err
	}()
	stop := sync.OnceFunc(func() {
		cancel()
		<-done
	})
	t.Cleanup(stop)
	b := webtest.NewBrowser(t)
	res := b.Watch(t, hs.URL, webtest.WatchOptions{WantSteps: 5, StayOnPage: true, Timeout: time.Minute})
	st := res.Last
	if st.AveragingBytes == 0 {
		if st, _ = webtest.WaitPage(b.Tab(), 10*time.Second, func(s webtest.PageState) bool { return s.AveragingBytes > 0 }); st.AveragingBytes == 0 {
			t.Fatalf("the page shows no replica sum: %+v", st)
		}
	}
	if err := webtest.Navigate(b.Tab(), "about:blank"); err != nil {
		t.Error(err)
	}
	stop()
	recs, err := metrics.ReadJSONL(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if st.AveragingBytes != recs[0].ReplicaBytes {
		t.Errorf("the page shows %d bytes of replica sum a step, the step records say %d", st.AveragingBytes, recs[0].ReplicaBytes)
	}
	if want := fmt.Sprintf("%.1f× under fp32", float64(recs[0].ReplicaRawBytes)/float64(recs[0].ReplicaBytes)); !strings.Contains(st.Averaging, want) {
		t.Errorf("averaging line %q: want %q in it", st.Averaging, want)
	}
	t.Logf("the page says %q", st.Averaging)
}
