package sim

import (
	"fmt"
	"math"
	"strings"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/scheduler"
)

// SpanKind is what a stage did during a Span.
type SpanKind int

const (
	SpanUnknown SpanKind = iota
	SpanForward
	SpanBackward
	SpanOptimizer
	// SpanNetWait: waiting for a message its sender had already produced.
	SpanNetWait
	// SpanReplicaSum: summing the step's gradients with the stage's other
	// replicas (Config.ReplicaSum).
	SpanReplicaSum
)

func (k SpanKind) String() string {
	switch k {
	case SpanForward:
		return "forward"
	case SpanBackward:
		return "backward"
	case SpanOptimizer:
		return "optimizer"
	case SpanNetWait:
		return "recv_wait"
	case SpanReplicaSum:
		return "replica_sum" // the runtime's name
	}
	return fmt.Sprintf("SpanKind(%d)", int(k))
}

func spanKind(k scheduler.ActionKind) SpanKind {
	switch k {
	case scheduler.ActionForward:
		return SpanForward
	case scheduler.ActionBackward:
		return SpanBackward
	case scheduler.ActionOptimizerStep:
		return SpanOptimizer
	}
	return SpanUnknown
}

// Span is one interval of a stage's simulated timeline, in seconds.
type Span struct {
	Stage      int
	Kind       SpanKind
	Step       int
	Micro      int // -1 for the optimizer
	Start, End float64
}

// Metrics converts s to the record the web view and plots read (Step
// 1-based there, as in metrics.StepRecord).
func (s Span) Metrics() metrics.Span {
	return metrics.Span{Stage: s.Stage, Kind: s.Kind.String(), Step: s.Step + 1, Micro: s.Micro, Start: s.Start, End: s.End}
}

// Timeline draws spans as text, one row per stage and one character per
// unit seconds: forward of micro-batch j is the lowercase letter 'a'+j,
// its backward the uppercase letter, '#' the optimizer step, '~' waiting on
// the network, '=' the gradient sum among replicas, '.' idle. Micro-batches past 'z' are drawn as '*' and '+'.
// A cell shows whatever covers its midpoint.
func Timeline(spans []Span, stages int, unit float64) string {
	end := 0.0
	for _, s := range spans {
		end = math.Max(end, s.End)
	}
	if unit <= 0 || math.IsNaN(unit) || math.IsInf(unit, 0) || stages < 1 {
		return ""
	}
	cells := int(math.Ceil(end/unit - 1e-9))
	const maxCells = 1 << 16
	cells = min(cells, maxCells)
	rows := make([][]byte, stages)
	for i := range rows {
		rows[i] = []byte(strings.Repeat(".", cells))
	}
	for _, s := range spans {
		if s.Stage < 0 || s.Stage >= stages {
			continue
		}
		ch := byte('?')
		switch s.Kind {
		case SpanForward, SpanBackward:
			if s.Micro >= 0 && s.Micro < 26 {
				ch = byte('a' + s.Micro)
				if s.Kind == SpanBackward {
					ch = byte('A' + s.Micro)
				}
			} else if s.Kind == SpanForward {
				ch = '*'
			} else {
				ch = '+'
			}
		case SpanOptimizer:
			ch = '#'
		case SpanNetWait:
			ch = '~'
		case SpanReplicaSum:
			ch = '='
		}
		for c := max(0, int(s.Start/unit)); c < cells; c++ {
			mid := (float64(c) + 0.5) * unit
			if mid >= s.End {
				break
			}
			if mid >= s.Start {
				rows[s.Stage][c] = ch
			}
		}
	}
	var b strings.Builder
	for i, row := range rows {
		fmt.Fprintf(&b, "%3d |%s|\n", i, row)
	}
	return b.String()
}
