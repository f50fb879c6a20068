package pipeline

import "errors"

// ErrCannotKill is what Placement.Kill returns for a holder that is not a
// process of this run (a goroutine, or a peer on another machine).
var ErrCannotKill = errors.New("pipeline: the stage's holder is not a process of this run, so it cannot be killed; kill faults need pipeline.transport = \"webrtc\" with local peers")

// ErrSpareRefused is what Placement.Setup returns when the spare answered
// but could not set its stage up (a config it rejects, say): giving the
// stage to another spare would fail the same way, so the run stops.
var ErrSpareRefused = errors.New("pipeline: the spare could not set up its stage")

// ErrNotAllowed is a peer whose key the run's allow-list does not name.
var ErrNotAllowed = errors.New("pipeline: the peer's key is not allowed in this run")
