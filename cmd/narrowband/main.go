// Command narrowband trains one GPT language model split into pipeline stages
// across ordinary machines. See README.md; `narrowband help` lists the
// subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `narrowband — train one transformer across ordinary machines

usage:
  narrowband run FILE.toml [--set section.key=value ...] [--out DIR] [--resume DIR]
  narrowband eval --checkpoint FILE --text FILE
  narrowband sample --checkpoint FILE [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]
  narrowband signal --secret-file F [--addr HOST:PORT] [--turn UDPHOST:PORT --public-ip IP]
  narrowband peer --signal ws://HOST:PORT/ROOM --secret-file F [--id NAME] [--ice stun:HOST:PORT ...]
  narrowband plot DIR... [--out DIR]
  narrowband simulate FILE.toml [--set section.key=value ...] [--json]
  narrowband help

Every config key is documented in docs/config.md.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "narrowband:", err)
		}
		os.Exit(exitCode(err))
	}
}

var errUsage = errors.New("usage")

func exitCode(err error) int {
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "eval":
		return cmdEval(ctx, rest, stdout, stderr)
	case "sample":
		return cmdSample(ctx, rest, stdout, stderr)
	case "plot":
		return cmdPlot(ctx, rest, stdout, stderr)
	case "peer":
		return cmdPeer(ctx, rest, stdout, stderr)
	case "signal":
		return cmdSignal(ctx, rest, stdout, stderr)
	case "worker":
		return cmdWorker(ctx, rest, stdout, stderr)
	case "simulate":
		return cmdSimulate(ctx, rest, stdout, stderr)
	case "tokenizer":
		return cmdTokenizer(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "narrowband: unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}
