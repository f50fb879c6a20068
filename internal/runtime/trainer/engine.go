package trainer

import (
	"context"
	"log/slog"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/runtime/engine"
	"github.com/narrowband/narrowband/internal/runtime/launch"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
)

// newEngine picks the engine the config asks for: one process for a
// single in-process stage, otherwise a pipeline whose stages are placed in
// goroutines, in processes of their own, or on WebRTC peers.
func newEngine(ctx context.Context, cfg config.Config, corpus *data.Corpus, log *slog.Logger, out string, onRoom func(launch.Room)) (engine.Engine, error) {
	if cfg.Pipeline.Stages == 1 && cfg.Pipeline.ReplicaCount() == 1 && cfg.Pipeline.Transport == "inproc" && !cfg.Pipeline.Processes {
		return engine.NewLocal(cfg, corpus)
	}
	layout, err := engine.Layout(cfg)
	if err != nil {
		return nil, err
	}
	var place pipeline.Placement
	switch {
	case cfg.Pipeline.Transport == "webrtc":
		place, err = launch.WebRTCWith(ctx, cfg, layout, out, log, onRoom)
	case cfg.Pipeline.Processes:
		place, err = launch.Processes(ctx, cfg, layout)
	default:
		place, err = pipeline.InProcess(cfg, layout)
	}
	if err != nil {
		return nil, err
	}
	return pipeline.New(cfg, layout, corpus, place, log)
}
