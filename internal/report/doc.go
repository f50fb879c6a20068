// Package report turns the folders that runs and sweeps leave behind into
// plots (PNG and SVG, drawn with gonum.org/v1/plot) and a Markdown report.
//
// Data flows one way: Load reads run folders (config.toml, metrics.jsonl,
// summary.json, timeline.jsonl) and sweep folders (sweep.json plus one
// folder per variant) into []Run; Write draws every plot the runs have data
// for and writes report.md next to them. Plot does both, for the
// `narrowband plot` command and for the trainer at the end of a run.
//
// Colours: when the runs use more than one codec, a colour means a codec
// (compression method, rank, precision) in every plot and runs that share a
// codec differ by dash pattern; when they all share one codec, a colour
// means a run. Colours come from the Okabe–Ito palette, which stays
// distinguishable under the common forms of colour blindness.
//
// Bad input never crashes a report: a missing or malformed config.toml,
// summary.json or sweep.json is an error naming the file; in metrics.jsonl
// and timeline.jsonl a truncated last line (a run killed mid-write) is
// skipped with a warning kept on the Run, and any other malformed line is an
// error naming the file and line.
package report
