package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/report"
	"github.com/narrowband/narrowband/internal/runtime/trainer"
	"github.com/narrowband/narrowband/web"
)

func cmdRun(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	a, err := parseArgs(argv, map[string]bool{"set": true, "out": true, "resume": true, "force": false, "only": true})
	if err != nil {
		return err
	}
	if len(a.pos) != 1 {
		return fmt.Errorf("run: want exactly one experiment file, got %d (usage: narrowband run FILE.toml [--set k=v] [--only VARIANT] [--out DIR] [--resume DIR] [--force])", len(a.pos))
	}
	cfg, err := config.LoadRun(a.pos[0], a.all("set"))
	if err != nil {
		return err
	}
	if err := cfg.OnlyVariants(a.all("only")); err != nil {
		return fmt.Errorf("%s: %w", a.pos[0], err)
	}
	out := a.str("out", cfg.Run.Out)
	resume := a.str("resume", "")
	if out == "" {
		if resume != "" {
			out = resume
		} else {
			out = filepath.Join("runs", cfg.Run.Name)
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts := trainer.Options{Config: cfg, Out: out, Resume: resume, Log: log, Force: a.str("force", "") == "true", Stop: armSoftStop(ctx)}
	if f, ok := stderr.(*os.File); ok && trainer.IsTerminal(f) {
		opts.Progress = stderr
	}
	if cfg.Web.Addr != "" {
		srv, url, stop, err := serveWeb(cfg.Web.Addr, log)
		if err != nil {
			return err
		}
		defer stop()
		opts.Web = srv
		fmt.Fprintf(stdout, "web view: %s\n", url)
		log.Info("web view", "url", url)
	}
	log.Info("run starting", "name", cfg.Run.Name, "config", a.pos[0], "out", out, "steps", cfg.Run.Steps)
	res, err := trainer.RunSweep(ctx, opts)
	if err != nil {
		return err
	}
	// Plots and report.md beside the results; a failure here loses no
	// training, so it is reported, not fatal.
	if files, err := report.Plot(out, out); err != nil {
		log.Warn("plots", "err", err)
	} else {
		log.Info("plots", "files", len(files), "report", filepath.Join(out, report.ReportFile))
	}
	if len(res) > 1 {
		fmt.Fprintf(stdout, "sweep %q finished: %d runs\n%s\nresults in %s (sweep.json, summary.md, one folder per run)\n", cfg.Run.Name, len(res), trainer.SweepTable(cfg, res), out)
		return nil
	}
	sum := res[0].Summary
	loss := fmt.Sprintf("%.4f nats/byte", sum.FinalValLoss) // a byte run: a token is a byte
	if !cfg.Data.Bytes() {
		loss = fmt.Sprintf("%.4f nats/token, %.4f nats/byte", sum.FinalValLoss, sum.FinalValLossPerByte)
	}
	fmt.Fprintf(stdout, "run %q finished: held-out loss %s after %d tokens in %.0fs (%.0f tokens/s)\nresults in %s (config.toml, metrics.jsonl, summary.json, %s)\n",
		sum.Name, loss, sum.Tokens, sum.WallSeconds, sum.TokensPerSecond, out, trainer.CheckpointFile)
	return nil
}

// serveWeb starts the live view on addr and returns its URL and a function
// that stops it. web.Listen falls back to another port when addr's is
// taken, names the address really bound and warns about binds beyond
// loopback.
func serveWeb(addr string, log *slog.Logger) (*web.Server, string, func(), error) {
	ln, url, err := web.Listen(addr, log)
	if err != nil {
		return nil, "", nil, fmt.Errorf("web.addr = %q: %w", addr, err)
	}
	srv := web.New(web.Options{Logger: log})
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	stop := func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
	}
	return srv, url, stop, nil
}
