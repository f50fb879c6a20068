// Package trainer is the run loop: it turns a config.Config into an engine
// (one process, or a pipeline whose stages it places in goroutines,
// processes or WebRTC peers), drives it step by step — learning-rate
// schedule, evaluation, checkpoints, metrics, progress — and writes the
// run's folder: config.toml, metrics.jsonl, summary.json and
// checkpoint.safetensors (plus train_state.safetensors for --resume). It
// also runs sweeps (one folder per variant) and `narrowband simulate`.
//
// Import rules: trainer is the top of the runtime; it imports engine,
// pipeline and launch, and nothing imports it but cmd/narrowband (and
// internal/report for a sweep's result type). Decisions live in package
// scheduler, compute in stages, codecs in compression; this package only
// carries them out.
package trainer
