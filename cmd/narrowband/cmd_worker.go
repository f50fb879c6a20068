package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/narrowband/narrowband/internal/runtime/launch"
)

// cmdWorker is a stage process started by `narrowband run` when
// pipeline.processes = true; its arguments come in the environment.
func cmdWorker(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return launch.RunWorker(ctx, log)
}
