// Package runtime holds no code: it is the floor of the program that owns
// goroutines, clocks, processes and files. Its packages, each importing only
// those listed before it (and the floors below, see docs/architecture.md):
//
//	engine    the vocabulary of a run: the Engine interface, step results,
//	          observers, the mapping from the run config to the model, and
//	          the one-process engine (Local)
//	pipeline  an Engine of S stages: the driver, the stage worker, the
//	          control protocol between them, the carrying out of the
//	          membership machine's commands (scheduler.Membership), and the
//	          Placement interface through which stages are placed — with
//	          its in-process implementation (goroutines and pipes)
//	launch    the other placements: one OS process per stage over loopback
//	          TCP, and WebRTC peers in a signaling room; the bodies of the
//	          worker and peer processes
//	trainer   the run loop: engine choice, learning-rate schedule,
//	          evaluation, checkpoints, metrics, progress, sweeps, simulate
package runtime
