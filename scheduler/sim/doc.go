// Package sim is a discrete-event simulator of the pipeline: it drives the
// same scheduler.StageMachine values the runtime drives, with simulated
// time instead of real compute and links. Inputs are per-stage compute
// times (measured), per-link bandwidth and latency, and message sizes (real
// codec byte counts); outputs are step time, tokens/s, per-stage
// busy/network-wait/bubble fractions, per-link traffic and, optionally, the
// timeline. It projects throughput to settings we cannot run here (32
// stages, GPU compute, 80 Mbps links) and checks the schedules end to end.
//
// Model: a stage computes one action at a time; an action's outputs are
// sent when it completes. Each link direction is a FIFO serializer (n bytes
// take n·8/bandwidth seconds) followed by a fixed one-way latency; sending
// never blocks the sender. The tied-embedding gradient travels on its own
// first↔last connection (Config.Embedding), or on the single link when
// there are two stages. Everything is deterministic: same Config, same
// Result.
//
// Config.Schedule = scheduler.Async runs the asynchronous machine
// (scheduler.AsyncMachine): its Stash and DropVersion actions take no
// simulated time, it has no step barrier (Config.Barrier is refused), and
// its steady state is measured over the middle half of the steps, so give
// it enough of them (TestAsyncHidesLatency uses 24).
//
// RunSwarm projects stages held by several replicas each (docs/swarm.md):
// the busiest lane, run as a pipeline of its share (Config.Mine), as the
// runtime runs a round-robin route, and each stage's gradient sum over
// the chain of its replicas (ChainSum) as Config.ReplicaSum, a stretch of
// each stage's timeline between its last backward and its optimizer step.
package sim
