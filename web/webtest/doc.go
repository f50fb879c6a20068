// Package webtest helps tests of the web view, the way net/http/httptest
// helps tests of handlers: Simulate publishes a synthetic run into a
// web.Server, NewBrowser starts headless Chromium, WatchRun watches a page
// until it has shown a number of steps and checks every panel, and
// SSEReader reads the /events stream from Go.
//
// The runtime's tests can point WatchRun at the web view of a real
// training run:
//
//	res := webtest.WatchRun(t, srv.URL, 20, filepath.Join(webtest.ArtifactDir(t), "run.png"))
package webtest
