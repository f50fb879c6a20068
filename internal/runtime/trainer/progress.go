package trainer

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
)

// progress draws one live line on a terminal: step/total, loss, tokens/s, ETA.
type progress struct {
	w     io.Writer
	total int
	last  time.Time
	start time.Time
	first int
}

// IsTerminal reports whether f is a character device (a terminal), where a
// live progress line makes sense; logs to files or pipes get plain lines.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newProgress(w io.Writer, total int) *progress {
	return &progress{w: w, total: total, first: -1}
}

func (p *progress) live() bool { return p.w != nil }

func (p *progress) update(r metrics.StepRecord, val float64) {
	now := time.Now()
	if p.first < 0 {
		p.first, p.start = r.Step, now
	}
	if now.Sub(p.last) < 200*time.Millisecond && r.Step != p.total {
		return
	}
	p.last = now
	eta := "?"
	if done := r.Step - p.first; done > 0 {
		per := now.Sub(p.start) / time.Duration(done)
		eta = (per * time.Duration(p.total-r.Step)).Round(time.Second).String()
	}
	v := ""
	if val == val { // not NaN
		v = fmt.Sprintf("  val %.4f", val)
	}
	fmt.Fprintf(p.w, "\r\033[Kstep %d/%d  loss %.4f%s  %.0f tok/s  ETA %s", r.Step, p.total, r.Loss, v, r.TokensPerSecond, eta)
}

func (p *progress) finish() {
	if p.w != nil {
		fmt.Fprintln(p.w)
	}
}
