// Package config is the one description of an experiment: what model, what
// data, how it is split into stages, how the links behave, how what crosses
// them is compressed, and what faults to inject. A run is fully described by a
// TOML file plus --set overrides; the resolved Config is written next to every
// run's results so the run can be repeated.
//
// Decoding is strict: an unknown key is an error naming the key and its line,
// and Validate names the key, the bad value and what is allowed. Every key is
// documented in docs/config.md.
package config
