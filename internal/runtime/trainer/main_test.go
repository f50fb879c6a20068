package trainer

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/narrowband/narrowband/internal/runtime/launch"
)

// TestMain lets this test binary serve as the worker process of runs with
// pipeline.processes = true.
func TestMain(m *testing.M) {
	if os.Getenv(launch.WorkerEnv) == "1" {
		if err := launch.RunWorker(context.Background(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))); err != nil {
			slog.Error("worker", "err", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	launch.WorkerCommand = func() ([]string, error) { return []string{os.Args[0]}, nil }
	// Runs make the coordinator's key in the user's config folder on
	// first use: give the tests one of their own.
	cfgHome, err := os.MkdirTemp("", "narrowband-test-config-*")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", cfgHome)
	code := m.Run()
	os.RemoveAll(cfgHome)
	if wasmOnce.dir != "" {
		os.RemoveAll(wasmOnce.dir) // the tab's peer, built by wasmDir
	}
	os.Exit(code)
}
