package main

import (
	"fmt"
	"io"
	"slices"
)

// helps is each subcommand's --help text: what it does and every flag.
var helps = map[string]string{
	"run": `usage: narrowband run FILE.toml [--set section.key=value ...] [--only VARIANT ...] [--out DIR] [--resume DIR] [--force]

Trains the experiment FILE.toml describes (every key: docs/config.md) and writes its folder:
config.toml, metrics.jsonl, summary.json, checkpoint.safetensors, train_state.safetensors,
plots and report.md. A [sweep] runs every variant into its own subfolder.

  --set section.key=value  override one config key (repeatable), e.g. --set run.steps=200
  --out DIR                the run's folder (default run.out, else runs/<run.name>); it must be
                           new, empty, or the run being resumed
  --resume DIR             continue the run in DIR from its train_state.safetensors
  --only VARIANT           run only the [[variant]] of that name (repeatable, or comma-separated), each
                           over the file's [sweep] lists as usual
  --force                  use a --out that holds something else (another run's files are removed)

Ctrl-C (or SIGTERM) finishes the step in progress, saves a checkpoint and prints the command that
resumes; a second Ctrl-C stops at once.
`,
	"eval": `usage: narrowband eval --checkpoint FILE --text FILE

Prints the checkpoint's mean loss on a text file, as JSON: per token (nats), and per byte of the
text the scored tokens cover (nats and bits). A checkpoint trained with a tokenizer encodes the text
with the tokenizer.json its run left beside it, checked against the sha256 the checkpoint names.

  --checkpoint FILE  a run's checkpoint.safetensors (or train_state.safetensors)
  --text FILE        a regular file of text to score
`,
	"sample": `usage: narrowband sample --checkpoint FILE [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]

Generates text from a checkpoint.

  --checkpoint FILE  a run's checkpoint.safetensors
  --prompt TEXT      the start of the text (default: a newline)
  --tokens N         bytes to generate
  --temperature T    sampling temperature (0: always the most likely byte)
  --top-k K          sample among the K most likely bytes only (0: all)
  --seed S           the sampler's seed
`,
	"signal": `usage: narrowband signal --secret-file F [--addr HOST:PORT] [--turn UDPHOST:PORT --public-ip IP]

Runs a standalone signaling server: peers that prove they hold the secret meet in rooms and
exchange WebRTC offers, answers and candidates.

  --secret-file F        the run's secret (16 characters or more; keep it mode 0600)
  --addr HOST:PORT       where to listen (default 127.0.0.1:8700)
  --turn UDPHOST:PORT    also serve STUN and TURN there (credentials derived from the secret)
  --public-ip IP         the address peers reach the TURN server at
`,
	"peer": `usage: narrowband peer --signal ws://HOST:PORT/ROOM --secret-file F [--id NAME] [--ice URL ...] [--loopback] [--relay-only] [--key FILE]

Joins a run from any machine and serves a stage when the coordinator gives it one (or waits as a
spare). A signaling server that is busy or not up yet is retried with back-off.

  --signal URL        the room's URL, as the run printed it
  --secret-file F     the run's secret
  --id NAME           this peer's name in the room (default: random)
  --ice URL           a STUN or TURN server (repeatable), e.g. --ice stun:203.0.113.7:3478
  --loopback          use loopback candidates only (every peer on this machine)
  --relay-only        send every link through a TURN relay
  --key FILE          this peer's identity key (default ~/.config/narrowband/peer.key, made on
                      first use); the run's ledger names the peer by it
`,
	"plot": `usage: narrowband plot DIR... [--out DIR]

Draws loss, throughput, compression and timeline plots and report.md for run or sweep folders.

  --out DIR  where to write them (default: the first DIR)
`,
	"simulate": `usage: narrowband simulate FILE.toml [--set section.key=value ...] [--json]

Predicts the experiment's step time and tokens/s from per-stage compute times (measured on this
machine, or simulate.forward_ms/backward_ms) and the link profile, with a timeline of one step.
With pipeline.replicas = R it projects the swarm: R lanes of the micro-batches, and each stage's
fp32 gradient sum over the chain of its replicas on the base [network] profile (docs/swarm.md).

  --set section.key=value  override one config key (repeatable)
  --json                   print the prediction as JSON
`,
	"ledger": `usage: narrowband ledger verify DIR
       narrowband ledger show DIR

A run's record of who trained what (DIR/ledger.jsonl): one entry per step, each hash-chained to
the one before and signed by the run's coordinator, naming the key that computed each stage.
verify checks every byte of it (chain, signatures, and the heads the summary and checkpoints
name) and prints each key's share of the work; show sums it up. Both print each key's spot
checks passed and failed (verify.fraction, docs/trust.md) and the faults recorded against it (a
replica evicted for a failed check). Exit status 1 if it does not verify.
`,
	"worker": `usage: narrowband worker

A stage process: narrowband run starts it (pipeline.processes = true) with its arguments in the
environment. Not for running by hand.
`,
}

// helpRequested reports whether argv asks for help (-h, -help, --help
// anywhere before a "--").
func helpRequested(argv []string) bool {
	if i := slices.Index(argv, "--"); i >= 0 {
		argv = argv[:i]
	}
	return slices.ContainsFunc(argv, func(a string) bool { return a == "-h" || a == "-help" || a == "--help" })
}

// printHelp writes cmd's help, or the overview for an unknown one.
func printHelp(w io.Writer, cmd string) {
	if h, ok := helps[cmd]; ok {
		fmt.Fprint(w, h)
		return
	}
	fmt.Fprint(w, usage)
}
