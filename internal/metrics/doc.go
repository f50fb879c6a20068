// Package metrics defines the records a run produces — one StepRecord per
// optimizer step (a line of metrics.jsonl), a Summary at the end, and
// timeline spans for the pipeline chart — and the Sink they are written to.
// The web view, the plots and the benchmark scripts all read these types, so
// their JSON names are the project's stable interface: add fields, never
// rename them.
package metrics
