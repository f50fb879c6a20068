package compression

import (
	"encoding/binary"
	"fmt"
)

// Setting is one rung of the auto-rank ladder: a low-rank rank and the
// precision of its factors.
type Setting struct {
	Rank      int
	Precision Precision
}

func (s Setting) String() string { return fmt.Sprintf("rank=%d/%v", s.Rank, s.Precision) }

// PayloadBytes is the lowrank payload size of s for a rows×cols message.
func (s Setting) PayloadBytes(rows, cols int) int {
	r := min(s.Rank, rows, cols)
	return 1 + uvarintLen(uint64(r)) + (rows+cols)*r*precBytes(s.Precision)
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

// DefaultLadder is ranks 4, 8, 16, … up to min(maxRank, d/2) in fp16 and the
// top rank in fp32, ordered from cheapest to most accurate. Ranks above d/2
// are left out: there the factors cost about as much as sending the matrix
// in fp16.
func DefaultLadder(d, maxRank int) []Setting {
	top := min(maxRank, d/2)
	var l []Setting
	for r := 4; r <= top; r *= 2 {
		l = append(l, Setting{r, FP16})
	}
	if len(l) == 0 {
		l = append(l, Setting{max(1, top), FP16})
	}
	l = append(l, Setting{l[len(l)-1].Rank, FP32})
	return l
}

// AutoRankConfig tunes the controller.
type AutoRankConfig struct {
	// Ladder lists the settings from cheapest (index 0) to most accurate;
	// each must cost at least as many bytes as the one before.
	Ladder []Setting
	// Margin is the fraction of the compute time a transfer may take.
	// Default 0.8: leaves room for framing, jitter and the other direction.
	Margin float64
	// Hysteresis: a step up needs the new setting to fit in
	// Margin·(1−Hysteresis) of the compute time. Default 0.2, so a
	// setting near the boundary is not left and retaken every step.
	Hysteresis float64
	// Hold is the minimum number of observations between two step-ups
	// (step-downs are immediate: a slow link stalls the pipeline).
	// Default 5.
	Hold int
	// Smoothing is the weight of a new observation in the running means
	// of throughput and compute time (exponential moving average).
	// Default 0.3.
	Smoothing float64
}

// DefaultAutoRankConfig returns the documented defaults around ladder.
func DefaultAutoRankConfig(ladder []Setting) AutoRankConfig {
	return AutoRankConfig{Ladder: ladder, Margin: 0.8, Hysteresis: 0.2, Hold: 5, Smoothing: 0.3}
}

// Validate names the bad field and value.
func (c AutoRankConfig) Validate() error {
	if len(c.Ladder) == 0 {
		return fmt.Errorf("%w: auto rank: empty ladder", ErrConfig)
	}
	for i, s := range c.Ladder {
		if s.Rank < 1 || precBytes(s.Precision) == 0 || s.Precision == Int8 {
			return fmt.Errorf("%w: auto rank ladder[%d] = %v: want rank ≥ 1 and fp32/fp16/bf16", ErrConfig, i, s)
		}
		if i > 0 && s.PayloadBytes(1024, 1024) < c.Ladder[i-1].PayloadBytes(1024, 1024) {
			return fmt.Errorf("%w: auto rank ladder[%d] = %v is cheaper than ladder[%d] = %v: order it cheapest first", ErrConfig, i, s, i-1, c.Ladder[i-1])
		}
	}
	if !(c.Margin > 0 && c.Margin <= 1) {
		return fmt.Errorf("%w: auto rank margin = %v: want (0, 1]", ErrConfig, c.Margin)
	}
	if !(c.Hysteresis >= 0 && c.Hysteresis < 1) {
		return fmt.Errorf("%w: auto rank hysteresis = %v: want [0, 1)", ErrConfig, c.Hysteresis)
	}
	if c.Hold < 0 {
		return fmt.Errorf("%w: auto rank hold = %d: want ≥ 0", ErrConfig, c.Hold)
	}
	if !(c.Smoothing > 0 && c.Smoothing <= 1) {
		return fmt.Errorf("%w: auto rank smoothing = %v: want (0, 1]", ErrConfig, c.Smoothing)
	}
	return nil
}

// Observation is one measurement the runtime feeds AutoRank, typically once
// per micro-batch sent.
type Observation struct {
	// BytesPerSecond is the measured link throughput.
	BytesPerSecond float64
	// ComputeSeconds is the sending stage's compute time per micro-batch.
	ComputeSeconds float64
	// Rows and Cols are the message shape (tokens per micro-batch, d).
	Rows, Cols int
}

// RankEvent reports a change of setting, for the runtime to log (metrics
// Event kind "rank_change").
type RankEvent struct {
	Old, New Setting
	Reason   string
	// TransferSeconds is the predicted transfer time of New; Budget is
	// the time allowed (Margin × compute).
	TransferSeconds, BudgetSeconds float64
}

// AutoRank picks the most accurate ladder setting whose predicted transfer
// time (payload bytes / throughput) stays under Margin × compute time. It is
// a pure state machine: no clocks, no I/O; the caller feeds observations.
type AutoRank struct {
	cfg      AutoRankConfig
	cur      int
	since    int
	bw, comp float64
	observed bool
}

// NewAutoRank starts at ladder index start (0 is the safe choice).
func NewAutoRank(cfg AutoRankConfig, start int) (*AutoRank, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if start < 0 || start >= len(cfg.Ladder) {
		return nil, fmt.Errorf("%w: auto rank start index %d: want 0..%d", ErrConfig, start, len(cfg.Ladder)-1)
	}
	return &AutoRank{cfg: cfg, cur: start}, nil
}

// Current is the setting in force.
func (a *AutoRank) Current() Setting { return a.cfg.Ladder[a.cur] }

// Observe folds in one measurement and returns the setting to use from now
// on, plus an event when it changed. Non-positive or non-finite
// measurements are ignored (a stalled link reports 0 bytes/s: the step-down
// comes from the next real measurement, not from a division by zero).
func (a *AutoRank) Observe(o Observation) (Setting, *RankEvent) {
	if !(o.BytesPerSecond > 0 && o.BytesPerSecond < 1e15) || !(o.ComputeSeconds > 0 && o.ComputeSeconds < 1e9) || o.Rows < 1 || o.Cols < 1 {
		return a.Current(), nil
	}
	if !a.observed {
		a.bw, a.comp, a.observed = o.BytesPerSecond, o.ComputeSeconds, true
	} else {
		s := a.cfg.Smoothing
		a.bw += s * (o.BytesPerSecond - a.bw)
		a.comp += s * (o.ComputeSeconds - a.comp)
	}
	a.since++
	budget := a.cfg.Margin * a.comp
	// Decide on the worse of the running mean and the latest measurement:
	// a step down then reacts at once (a slow link stalls the pipeline
	// now), and a step up needs both the mean and the latest to fit with
	// the hysteresis margin on top (a mean still falling after a drop
	// must not lift the rank again).
	bw := min(a.bw, o.BytesPerSecond)
	budget = a.cfg.Margin * min(a.comp, o.ComputeSeconds)
	t := func(i int) float64 { return float64(a.cfg.Ladder[i].PayloadBytes(o.Rows, o.Cols)) / bw }
	old := a.cur
	var reason string
	switch {
	case t(a.cur) > budget:
		// Step down at once to the best setting that fits (or the floor).
		n := 0
		for i := a.cur - 1; i >= 0; i-- {
			if t(i) <= budget {
				n = i
				break
			}
		}
		if n == a.cur {
			return a.Current(), nil
		}
		a.cur = n
		reason = fmt.Sprintf("transfer %.1f ms > budget %.1f ms (link %.2f MB/s, compute %.1f ms)", 1e3*t(old), 1e3*budget, bw/1e6, 1e3*budget/a.cfg.Margin)
		if t(n) > budget {
			reason += "; even the cheapest setting does not fit"
		}
	case a.since > a.cfg.Hold:
		up := budget * (1 - a.cfg.Hysteresis)
		n := a.cur
		for i := a.cur + 1; i < len(a.cfg.Ladder); i++ {
			if t(i) <= up {
				n = i
			}
		}
		if n == a.cur {
			return a.Current(), nil
		}
		a.cur = n
		reason = fmt.Sprintf("transfer would be %.1f ms ≤ %.1f ms (link %.2f MB/s, compute %.1f ms)", 1e3*t(n), 1e3*up, bw/1e6, 1e3*budget/a.cfg.Margin)
	default:
		return a.Current(), nil
	}
	a.since = 0
	return a.Current(), &RankEvent{Old: a.cfg.Ladder[old], New: a.Current(), Reason: reason, TransferSeconds: t(a.cur), BudgetSeconds: budget}
}

// Detail is the event as the Detail map of a metrics Event of kind
// "rank_change".
func (e *RankEvent) Detail() map[string]any {
	return map[string]any{
		"old_rank": e.Old.Rank, "old_precision": e.Old.Precision.String(),
		"new_rank": e.New.Rank, "new_precision": e.New.Precision.String(),
		"reason":           e.Reason,
		"transfer_seconds": e.TransferSeconds,
		"budget_seconds":   e.BudgetSeconds,
	}
}
