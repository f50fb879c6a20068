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
	"sync"
	"syscall"

	"github.com/narrowband/narrowband/internal/runtime/trainer"
)

const usage = `narrowband — train one transformer across ordinary machines

usage:
  narrowband run FILE.toml [--set section.key=value ...] [--out DIR] [--resume DIR] [--force]
  narrowband eval --checkpoint FILE --text FILE
  narrowband sample --checkpoint FILE [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]
  narrowband signal --secret-file F [--addr HOST:PORT] [--turn UDPHOST:PORT --public-ip IP]
  narrowband peer --signal ws://HOST:PORT/ROOM --secret-file F [--id NAME] [--ice stun:HOST:PORT ...]
  narrowband plot DIR... [--out DIR]
  narrowband simulate FILE.toml [--set section.key=value ...] [--json]
  narrowband tokenizer train --vocab N --out tokenizer.json PATHS...
  narrowband ledger verify DIR | narrowband ledger show DIR
  narrowband help [COMMAND]          (or COMMAND --help)

Every config key is documented in docs/config.md.
`

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	ctx, soft := withSoftStop(ctx)
	sigs := make(chan os.Signal, 3)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		// First signal: a run finishes its step, checkpoints and stops;
		// any other command stops at once. Second: stop now. Third: exit.
		for n := 1; ; n++ {
			s := <-sigs
			switch {
			case n == 1 && soft.request():
				fmt.Fprintf(os.Stderr, "\nnarrowband: %v: finishing the step in progress and saving a checkpoint; %v again stops at once\n", s, s)
			case n <= 2:
				cancel()
			default:
				os.Exit(130)
			}
		}
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	signal.Stop(sigs)
	cancel()
	if err != nil {
		if !errors.Is(err, errUsage) && !errors.Is(err, errHelp) {
			fmt.Fprintln(os.Stderr, "narrowband:", err)
		}
		os.Exit(exitCode(err))
	}
}

// softStop is how a signal asks a run to stop after its step: the run arms
// it (Options.Stop); commands that do not arm it are cancelled at once.
type softStop struct {
	mu    sync.Mutex
	armed bool
	ch    chan struct{}
	done  bool
}

type softStopKey struct{}

func withSoftStop(ctx context.Context) (context.Context, *softStop) {
	s := &softStop{ch: make(chan struct{})}
	return context.WithValue(ctx, softStopKey{}, s), s
}

// armSoftStop returns the channel a signal closes, and makes the next
// signal close it instead of cancelling ctx.
func armSoftStop(ctx context.Context) <-chan struct{} {
	s, ok := ctx.Value(softStopKey{}).(*softStop)
	if !ok {
		return nil // a test calling run directly: only ctx stops it
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = true
	return s.ch
}

// request closes the channel if a run armed it, and says whether it did.
func (s *softStop) request() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.armed || s.done {
		return false
	}
	s.done = true
	close(s.ch)
	return true
}

var errUsage = errors.New("usage")

func exitCode(err error) int {
	switch {
	case errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, trainer.ErrStopped), errors.Is(err, context.Canceled):
		return 130 // stopped by a signal, as a shell reports ^C
	}
	return 1
}

// errHelp is --help on a subcommand: its usage went to stdout.
var errHelp = errors.New("help")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	if _, ok := helps[cmd]; ok && helpRequested(rest) {
		printHelp(stdout, cmd)
		return errHelp
	}
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
	case "ledger":
		return cmdLedger(ctx, rest, stdout, stderr)
	case "simulate":
		return cmdSimulate(ctx, rest, stdout, stderr)
	case "tokenizer":
		return cmdTokenizer(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		if len(rest) > 0 {
			printHelp(stdout, rest[0])
		} else {
			fmt.Fprint(stdout, usage)
		}
		return nil
	default:
		fmt.Fprintf(stderr, "narrowband: unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}
