// Package trainer is the runtime: it owns the goroutines, the clock and the
// files of a run. It turns a config.Config into an engine (one process, or a
// pipeline of stages linked by transports), drives it step by step — learning
// rate schedule, evaluation, checkpoints, metrics, progress — and writes the
// run's folder: config.toml, metrics.jsonl, summary.json and
// checkpoint.safetensors (plus train_state.safetensors for --resume).
//
// Everything that decides (schedules, assignment) lives in package scheduler;
// everything that computes lives in package stages; this package only
// carries their decisions out.
package trainer
