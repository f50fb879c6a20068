// Package web is the live view of a training run: an HTTP handler that
// serves one self-contained page (HTML, JS and CSS embedded in the binary,
// no CDN, no external fonts, works offline; a Content-Security-Policy
// forbids anything else) and streams the run to every open tab with
// server-sent events.
//
// Data flow: the runtime calls SetRun, SetPeers, SetStatus, PublishStep,
// PublishSpans and PublishEvent. Each call encodes its record once
// (by hand: cheap, and NaN/±Inf survive as "NaN"/"Infinity" strings), keeps
// it in a bounded history (old steps are thinned, spans and events are
// kept in rings) and appends the encoded frame to one shared ring. That is
// all a publish does, so its cost does not depend on the number of
// observers, and it never waits on a browser. Each observer's goroutine
// wakes every FlushInterval and writes the frames it has not sent yet in
// one write; one that falls more than QueueLen frames behind gets a fresh
// snapshot instead.
//
// A new observer of /events first receives a "snapshot" event (run info,
// peers, status, the swarm, the whole step history so far, recent full
// step records, recent spans and events), then live deltas: "step",
// "spans", "event", "peers", "swarm", "run" and "status". GET
// /api/snapshot returns the same snapshot as JSON. The swarm (swarm.go)
// is each stage's replicas and their states, folded by the server from
// step records, replica events and the peer list, so that a tab opened
// late shows replicas whose events the bounded event ring has dropped. Every endpoint is read-only; other methods get 405. Requests
// whose Host header is not a name of this server get 421 (DNS rebinding
// would otherwise let any web page read the run); Options.AllowedHosts
// adds names.
//
// Use:
//
//	ln, url, err := web.Listen("127.0.0.1:0", logger) // url: where it really listens
//	view := web.New(web.Options{})
//	httpSrv := &http.Server{Handler: view.Handler(), ReadHeaderTimeout: 10 * time.Second}
//	go httpSrv.Serve(ln)
//	view.SetRun(web.RunInfo{Name: name, Seed: seed, Config: tomlText, TotalSteps: n, Start: time.Now()})
//	... view.PublishStep(rec) after every optimizer step ...
//	view.Close() // ends the event streams, so httpSrv.Shutdown does not wait on them
//	httpSrv.Shutdown(ctx)
//
// The page uses relative URLs, so the handler can be mounted under a
// prefix with http.StripPrefix. Package webtest drives the page in
// headless Chromium for tests.
package web
