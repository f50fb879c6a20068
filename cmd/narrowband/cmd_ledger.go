package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/narrowband/narrowband/internal/ledger"
	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/stages"
)

// cmdLedger checks a run's record of who trained what (verify) or sums it
// up (show).
func cmdLedger(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	if len(argv) < 1 || (argv[0] != "verify" && argv[0] != "show") {
		return fmt.Errorf("ledger: usage: narrowband ledger verify DIR | narrowband ledger show DIR")
	}
	a, err := parseArgs(argv[1:], map[string]bool{})
	if err != nil {
		return err
	}
	if len(a.pos) != 1 {
		return fmt.Errorf("ledger %s: want one run folder, got %d", argv[0], len(a.pos))
	}
	dir := a.pos[0]
	head, within, err := anchors(dir)
	if err != nil {
		return fmt.Errorf("ledger %s: %w", argv[0], err)
	}
	rep, err := ledger.VerifyAnchored(filepath.Join(dir, ledger.File), head, within)
	if err != nil {
		return fmt.Errorf("ledger %s: %w", argv[0], err)
	}
	if argv[0] == "verify" {
		fmt.Fprintf(stdout, "%s: %d entries verify (chain, signatures by coordinator %s", filepath.Join(dir, ledger.File), rep.Entries, rep.Coordinator.Short())
		if head != "" {
			fmt.Fprint(stdout, ", last entry as the summary records")
		}
		if len(within) > 0 {
			fmt.Fprintf(stdout, ", %d checkpoint head(s) found", len(within))
		}
		fmt.Fprintln(stdout, ")")
	} else {
		fmt.Fprintf(stdout, "run %q: %d steps recorded in %d entries (%d start(s)), coordinator %s, head %s\n", rep.Run, rep.Steps, rep.Entries, rep.Opens, rep.Coordinator.Short(), rep.Head)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "key\tpeers\tstages\tsteps\tmicro-batches\tshare\ttokens\tbytes sent\tchecks ok/failed\tfaults")
	for _, s := range rep.Shares {
		st := make([]string, len(s.Stages))
		for i, x := range s.Stages {
			st[i] = fmt.Sprint(x)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.1f%%\t%d\t%d\t%d/%d\t%s\n", s.Key.Short(), strings.Join(s.Peers, ","), strings.Join(st, ","), s.Steps, s.Micro, 100*s.Fraction,
			s.Tokens, s.BytesSent, s.ChecksPassed, s.ChecksFailed, strings.Join(s.Faults, "; "))
	}
	return tw.Flush()
}

// anchors are the ledger heads a run folder records elsewhere: the
// summary's (the last entry, once the run finished) and its checkpoints'.
func anchors(dir string) (head string, within []string, err error) {
	if b, err := os.ReadFile(filepath.Join(dir, "summary.json")); err == nil {
		var sum metrics.Summary
		if err := json.Unmarshal(b, &sum); err != nil {
			return "", nil, fmt.Errorf("%s: %w", filepath.Join(dir, "summary.json"), err)
		}
		head = sum.LedgerHead
	}
	for _, f := range []string{"checkpoint.safetensors", "train_state.safetensors"} {
		_, md, err := stages.ReadSafetensors(filepath.Join(dir, f))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		if h := md["narrowband.ledger_head"]; h != "" {
			within = append(within, h)
		}
	}
	return head, within, nil
}
