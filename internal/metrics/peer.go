package metrics

import "fmt"

// PeerState is what a peer is doing in the run. The zero value means the
// runtime did not say.
type PeerState int

// Peer states.
const (
	PeerUnknown PeerState = iota
	PeerActive            // holds a stage and is training
	PeerSpare             // connected, waiting to take over a stage
	PeerDead              // stopped answering
)

func (s PeerState) String() string {
	switch s {
	case PeerActive:
		return "active"
	case PeerSpare:
		return "spare"
	case PeerDead:
		return "dead"
	case PeerUnknown:
		return "unknown"
	}
	return fmt.Sprintf("PeerState(%d)", int(s))
}

// MarshalText writes the state's name, which is what the web view shows.
func (s PeerState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Peer is one machine in the run, as the runtime reports it and the web
// view shows it.
type Peer struct {
	ID        string    `json:"id"`
	Stage     int       `json:"stage"`     // pipeline stage it holds; -1 for none
	Address   string    `json:"address"`   // e.g. "192.0.2.7:50123"
	Candidate string    `json:"candidate"` // ICE candidate type in use: host, srflx, relay
	State     PeerState `json:"state"`
}
