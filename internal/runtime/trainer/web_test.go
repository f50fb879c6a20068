package trainer

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"

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
