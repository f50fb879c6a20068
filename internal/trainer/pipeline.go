package trainer

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/data"
)

func newPipeline(ctx context.Context, cfg config.Config, corpus *data.Corpus, log *slog.Logger) (engine, error) {
	return nil, fmt.Errorf("%w: pipeline.stages = %d with transport %q is not built yet", ErrNoEngine, cfg.Pipeline.Stages, cfg.Pipeline.Transport)
}
