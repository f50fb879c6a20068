package launch

import (
	"context"
	"encoding/json"
	"log/slog"
	"runtime"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/runtime/pipeline"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/stages/kernels"
)

// What every stage process body shares (a worker of pipeline.processes, a
// `narrowband peer`, a browser tab): the JSON of set-up messages, the
// config from the driver, and serving the driver's commands.

func sendJSON(ctx context.Context, c transport.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Send(ctx, b)
}

func recvJSON(ctx context.Context, c transport.Conn, v any) error {
	b, err := c.Recv(ctx)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// serveWorker tells the driver whether setup worked, then serves its
// commands until the run ends; closers run at the end either way.
func serveWorker(ctx context.Context, ctrl transport.Conn, w *pipeline.Worker, closers []func() error, setupErr error, log *slog.Logger) error {
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	if setupErr != nil {
		sendJSON(ctx, ctrl, map[string]string{"err": setupErr.Error()})
		return setupErr
	}
	if err := sendJSON(ctx, ctrl, map[string]string{}); err != nil {
		return err
	}
	log.Info("stage ready")
	return w.Run(ctx)
}

// workerConfig reads the config a driver sent in its setup and bounds this
// process's threads by it.
func workerConfig(text string) (config.Config, error) {
	cfg, err := config.Parse(text, "setup")
	if err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	applyThreads(cfg)
	return cfg, nil
}

// applyThreads bounds this process's compute threads (train.threads): the
// Go scheduler, the stages' worker pool and Sgemm's. Call it before any
// compute, in a process that runs one stage.
func applyThreads(cfg config.Config) {
	if n := cfg.Train.Threads; n > 0 {
		runtime.GOMAXPROCS(n)
		kernels.SetThreads(n)
	}
}
