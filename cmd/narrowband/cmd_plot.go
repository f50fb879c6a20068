package main

import (
	"context"
	"fmt"
	"io"

	"github.com/narrowband/narrowband/internal/report"
)

// cmdPlot draws the plots and the Markdown report of run or sweep folders.
func cmdPlot(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	a, err := parseArgs(argv, map[string]bool{"out": true})
	if err != nil {
		return err
	}
	if len(a.pos) == 0 {
		return fmt.Errorf("plot: usage: narrowband plot DIR... [--out DIR] (run or sweep folders)")
	}
	out := a.str("out", a.pos[0])
	files, err := report.Plot(out, a.pos...)
	for _, f := range files {
		fmt.Fprintln(stdout, f)
	}
	if err != nil && len(files) > 0 {
		// Some plots were drawn; the error names the ones that were not.
		fmt.Fprintln(stderr, "narrowband plot: warning:", err)
		return nil
	}
	return err
}
