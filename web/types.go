package web

import (
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
)

// RunInfo describes the run as a whole; the page shows it in the overview.
type RunInfo struct {
	Name       string    // run name, e.g. the TOML file's stem
	Seed       int64     // the run's seed, so an observer can reproduce it
	Config     string    // resolved config as TOML text, shown verbatim
	TotalSteps int       // planned optimizer steps; 0 if open-ended
	Start      time.Time // when the run started
}

// Peer and PeerState are the runtime's vocabulary (package metrics): the
// web view shows what the runtime reports, under these names.
type (
	Peer      = metrics.Peer
	PeerState = metrics.PeerState
)

// Peer states.
const (
	PeerUnknown = metrics.PeerUnknown
	PeerActive  = metrics.PeerActive
	PeerSpare   = metrics.PeerSpare
	PeerDead    = metrics.PeerDead
)
