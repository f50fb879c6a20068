// Package web is the live view of a training run: an HTTP handler that
// serves one self-contained page (HTML, JS and CSS embedded in the binary,
// no CDN, works offline) and streams the run to every open tab with
// server-sent events.
//
// Data flow: the runtime calls SetRun, SetPeers, SetStatus, PublishStep,
// PublishSpans and PublishEvent. Each call encodes its record once, updates a
// bounded in-memory history (old steps are thinned, spans and events are kept
// in rings) and appends the encoded frame to every observer's queue. The
// calls never block on a browser: an observer whose queue overflows has its
// queue dropped and is sent a fresh snapshot once it catches up, so a slow
// tab sees a coalesced view instead of slowing training.
//
// A new observer of /events first receives a "snapshot" event (run info,
// peers, status, the whole step history so far, recent full step records,
// recent spans and events), then live deltas: "step", "spans", "event",
// "peers", "run" and "status". Every endpoint is read-only.
package web
