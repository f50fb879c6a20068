// Package engine is the vocabulary the run loop and the engines share: the
// Engine interface (one training step, evaluation, gathering and restoring
// the whole model), what a step reports, the observers that watch a run,
// the mapping from a run's config to the model and optimizer, and Local,
// the engine that trains the whole model in this process.
//
// Import rules: engine imports the floors below the runtime (stages,
// compression, scheduler, internal/config, internal/data, internal/metrics)
// and no other runtime package; pipeline, launch and trainer import it.
package engine
