package launch

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"sync"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
)

// Meter counts what one peer has done, for a peer that shows its own
// progress (a browser tab): the steps it finished, the seconds it spent
// computing them, and the bytes its links carried. It reads the peer's own
// step reports to the coordinator, so it counts exactly what the run
// counts. Safe for concurrent use; the zero value is ready.
type Meter struct {
	mu sync.Mutex
	p  Progress
	// links are the stage's data links, for their byte counters.
	links []transport.Conn
}

// Progress is a Meter's reading.
type Progress struct {
	Stage         int     `json:"stage"`           // -1 while a spare
	Steps         int     `json:"steps"`           // optimizer steps finished
	BusySeconds   float64 `json:"busy_seconds"`    // computing them (forward, backward, optimizer)
	TokensPerStep int     `json:"tokens_per_step"` // batch × context
	BytesSent     uint64  `json:"bytes_sent"`      // on the data links
	BytesReceived uint64  `json:"bytes_received"`
}

// Read returns the counts so far.
func (m *Meter) Read() Progress {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.p
	if len(m.links) == 0 {
		p.Stage = -1
	}
	seen := map[transport.Conn]bool{}
	for _, c := range m.links {
		if c == nil || seen[c] {
			continue // with two stages the tied link is the neighbour's
		}
		seen[c] = true
		st := c.Stats()
		p.BytesSent += st.BytesSent
		p.BytesReceived += st.BytesReceived
	}
	return p
}

func (m *Meter) started(stage, tokensPerStep int, links ...transport.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.p.Stage, m.p.TokensPerStep, m.links = stage, tokensPerStep, links
}

// meteredCtrl is the control link as the Meter sees it.
type meteredCtrl struct {
	transport.Conn
	m *Meter
}

var doneKind = []byte(`"kind":"done"`)

func (c meteredCtrl) Send(ctx context.Context, msg []byte) error {
	err := c.Conn.Send(ctx, msg)
	if err == nil && bytes.Contains(msg, doneKind) {
		c.m.count(msg)
	}
	return err
}

// count reads the busy seconds of one step report (a control frame: a u32
// JSON length, the JSON, a blob).
func (m *Meter) count(frame []byte) {
	_, p, err := wire.Decode(frame, len(frame))
	if err != nil || len(p) < 4 {
		return
	}
	n := binary.LittleEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) {
		return
	}
	var r struct {
		Kind  string                  `json:"kind"`
		Stats *struct{ Busy float64 } `json:"stats"`
	}
	if json.Unmarshal(p[4:4+n], &r) != nil || r.Kind != "done" {
		return
	}
	m.mu.Lock()
	m.p.Steps++
	if r.Stats != nil {
		m.p.BusySeconds += r.Stats.Busy
	}
	m.mu.Unlock()
}
