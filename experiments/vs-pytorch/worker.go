package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/narrowband/narrowband/internal/runtime/launch"
)

// pinEnv asks a worker process to pin itself before it starts: stage i to
// the CPU at position i of this comma-separated list. startPipeline sets
// it; the narrowband runtime knows nothing of it.
const pinEnv = "VSPYTORCH_STAGE_CORES"

// workerArgsEnv holds a worker's arguments as JSON (set by launch; its
// "stage" is the stage the worker runs).
const workerArgsEnv = "NARROWBAND_WORKER_ARGS"

// runWorker is the body of this program when launch starts it as a stage
// worker (launch.WorkerEnv = 1): launch.RunWorker, on its stage's core if
// pinEnv asks for one.
func runWorker() error {
	if cores := os.Getenv(pinEnv); cores != "" {
		return pinAndRestart(cores)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return launch.RunWorker(context.Background(), log)
}

// pinAndRestart pins the calling thread to the stage's CPU and executes
// this program afresh without pinEnv, as `taskset -c` does: the CPU mask
// survives execve and every thread of the new process inherits it, so the
// Go runtime and the stage's compute start pinned (pinning a running
// process's threads one by one could miss one started meanwhile). It
// returns only on error.
func pinAndRestart(cores string) error {
	var a struct {
		Stage int `json:"stage"`
	}
	if err := json.Unmarshal([]byte(os.Getenv(workerArgsEnv)), &a); err != nil {
		return fmt.Errorf("pin worker: %s: %w", workerArgsEnv, err)
	}
	list := strings.Split(cores, ",")
	if a.Stage < 0 || a.Stage >= len(list) {
		return fmt.Errorf("pin worker: stage %d, but %s=%q names %d cores", a.Stage, pinEnv, cores, len(list))
	}
	cpu, err := strconv.Atoi(list[a.Stage])
	if err != nil {
		return fmt.Errorf("pin worker: %s=%q: %w", pinEnv, cores, err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	runtime.LockOSThread() // the mask is per thread: set it on the one that calls execve
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin worker of stage %d to CPU %d: %w", a.Stage, cpu, err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, pinEnv+"=") {
			env = append(env, kv)
		}
	}
	return fmt.Errorf("restart pinned worker: %w", syscall.Exec(self, os.Args, env))
}

// stageCores gives S stages the CPUs this process may run on, in order,
// wrapping around when there are fewer CPUs than stages: pinEnv's value.
func stageCores(S int) (string, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return "", fmt.Errorf("CPUs this process may use: %w", err)
	}
	var cpus []string
	for c := 0; len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, strconv.Itoa(c))
		}
	}
	if len(cpus) == 0 {
		return "", fmt.Errorf("this process may run on no CPU")
	}
	out := make([]string, S)
	for i := range out {
		out[i] = cpus[i%len(cpus)]
	}
	return strings.Join(out, ","), nil
}
