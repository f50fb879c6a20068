package trainer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
)

// SweepResult is one line of a sweep's sweep.json.
type SweepResult = metrics.SweepResult

// RunSweep runs every variant of o.Config's [sweep] into its own folder
// under o.Out, then writes sweep.json and summary.md there. A config
// without a sweep is one plain run.
func RunSweep(ctx context.Context, o Options) ([]SweepResult, error) {
	vs, err := o.Config.Variants()
	if err != nil {
		return nil, err
	}
	// Every variant's tokenizer is read before the first variant trains: a
	// missing file or a wrong vocab_size in the last variant must not
	// surface after the others ran for hours.
	for _, v := range vs {
		if err := v.Config.CheckTokenizer(); err != nil {
			if v.Name != "" {
				return nil, fmt.Errorf("variant %s: %w", v.Name, err)
			}
			return nil, err
		}
	}
	if len(vs) == 1 && vs[0].Name == "" {
		o.Config = vs[0].Config
		sum, err := Run(ctx, o)
		if err != nil {
			return nil, err
		}
		return []SweepResult{{Dir: o.Out, Summary: sum}}, nil
	}
	lock, err := lockFolder(o.Out)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	resuming := o.Resume != "" && sameDir(o.Resume, o.Out)
	if err := checkFolder(o.Out, resuming, o.Force); err != nil {
		return nil, err
	}
	var names []string
	for _, v := range vs {
		names = append(names, v.Name)
	}
	dirs := folderNames(names)
	var res []SweepResult
	for i, v := range vs {
		if o.Log != nil {
			o.Log.Info("sweep variant", "n", i+1, "of", len(vs), "variant", v.Name, "dir", dirs[i])
		}
		vo := o
		vo.Config = v.Config
		vo.Out = filepath.Join(o.Out, dirs[i])
		if o.Resume != "" {
			vo.Resume = filepath.Join(o.Resume, dirs[i])
			if sum, ok := finishedRun(vo.Resume, v.Config); ok {
				// Resuming a sweep skips the variants that finished.
				res = append(res, SweepResult{Variant: v.Name, Values: v.Values, Dir: vo.Out, Summary: sum})
				continue
			}
			if _, err := os.Stat(filepath.Join(vo.Resume, StateFile)); err != nil {
				vo.Resume = "" // never started, or stopped before its first checkpoint: start it
			}
		}
		sum, err := Run(ctx, vo)
		if err != nil {
			return res, fmt.Errorf("sweep variant %s: %w", v.Name, err)
		}
		res = append(res, SweepResult{Variant: v.Name, Values: v.Values, Dir: vo.Out, Summary: sum})
	}
	if err := metrics.WriteJSON(filepath.Join(o.Out, "sweep.json"), res); err != nil {
		return res, err
	}
	return res, metrics.WriteFileAtomic(filepath.Join(o.Out, "summary.md"), []byte(SweepTable(o.Config, res)))
}

// finishedRun reads the summary of a run folder whose run finished all of
// cfg's steps.
func finishedRun(dir string, cfg config.Config) (*metrics.Summary, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		return nil, false
	}
	var sum metrics.Summary
	if json.Unmarshal(b, &sum) != nil || sum.Steps != cfg.Run.Steps {
		return nil, false
	}
	return &sum, true
}

// SweepTable renders a sweep's results as a Markdown table, with each
// variant's tokens/s relative to the fastest.
func SweepTable(cfg config.Config, res []SweepResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", cfg.Run.Name)
	var keys []string
	if len(res) > 0 {
		for k := range res[0].Values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
	}
	best := 0.0
	for _, r := range res {
		best = max(best, r.Summary.TokensPerSecond)
	}
	// Runs with a tokenizer lose per token and per byte: the per-byte
	// loss, the one that compares tokenizers, gets a column of its own.
	perByte := false
	for _, r := range res {
		perByte = perByte || r.Summary.FinalValLossPerByte != r.Summary.FinalValLoss
	}
	hdr := append(append([]string{}, keys...), "final val loss")
	if perByte {
		hdr = append(hdr, "per byte")
	}
	hdr = append(hdr, "tokens/s", "vs fastest", "bubble", "network wait", "wire B/token fwd", "wire B/token bwd")
	// Runs with replicas sum each stage's gradient among them: its bytes
	// a step, and how much less than fp32 ([compression.replicas]).
	replicas := false
	for _, r := range res {
		replicas = replicas || r.Summary.ReplicaBytesPerStep > 0
	}
	if replicas {
		hdr = append(hdr, "replica sum B/step", "vs fp32")
	}
	hdr = append(hdr, "wall s")
	fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(hdr, " | "), strings.Repeat("---|", len(hdr)))
	for _, r := range res {
		s := r.Summary
		var row []string
		for _, k := range keys {
			row = append(row, strings.Trim(r.Values[k], `"`))
		}
		rel := 0.0
		if best > 0 {
			rel = s.TokensPerSecond / best
		}
		row = append(row, fmt.Sprintf("%.4f", s.FinalValLoss))
		if perByte {
			row = append(row, fmt.Sprintf("%.4f", s.FinalValLossPerByte))
		}
		row = append(row, fmt.Sprintf("%.0f", s.TokensPerSecond), fmt.Sprintf("%.2f×", rel),
			fmt.Sprintf("%.2f", s.BubbleFraction), fmt.Sprintf("%.2f", s.NetworkWaitFraction),
			fmt.Sprintf("%.1f", s.WireBytesPerTokenForward), fmt.Sprintf("%.1f", s.WireBytesPerTokenBackward))
		if replicas {
			row = append(row, fmt.Sprintf("%.0f", s.ReplicaBytesPerStep), fmt.Sprintf("%.2f×", s.ReplicaCompressionRatio))
		}
		row = append(row, fmt.Sprintf("%.1f", s.WallSeconds))
		fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
	}
	return b.String()
}
