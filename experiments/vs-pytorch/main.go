package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/narrowband/narrowband/internal/runtime/launch"
)

// result is what every measuring process prints as one JSON line.
type result struct {
	Side          string  `json:"side"`
	Label         string  `json:"label,omitempty"`
	Steps         int     `json:"steps"`
	Tokens        int     `json:"tokens"`
	WallS         float64 `json:"wall_s"`
	CPUS          float64 `json:"cpu_s"`
	TokensPerS    float64 `json:"tokens_per_s"`
	TokensPerCPUS float64 `json:"tokens_per_cpu_s"`
	Loss          float64 `json:"loss"`
	PeakRSS       int64   `json:"peak_rss_bytes"`
	BLAS          string  `json:"blas,omitempty"`
	DataSHA       string  `json:"data_sha256,omitempty"` // first 16 hex digits of the training text's SHA-256
	// DriverCPUS is the pipeline's driving process's own CPU time over the
	// timed steps (batches, control messages, heartbeats), which CPUS,
	// the stage workers' time, leaves out.
	DriverCPUS float64 `json:"driver_cpu_s,omitempty"`
}

type options struct {
	steps, warmup, rounds, batch int
	goThreads, torchThreads      string
	pipeline                     bool
	micro                        int
	python, script, src          string
}

func main() {
	if os.Getenv(launch.WorkerEnv) == "1" {
		// Started by the -side=pipeline process as one of its stages.
		if err := runWorker(); err != nil {
			fmt.Fprintln(os.Stderr, "vs-pytorch worker:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	side := flag.String("side", "", "internal: run one measuring side (go: the whole model, pipeline: 2 stage processes) and print JSON")
	threads := flag.Int("threads", 0, "internal: compute threads of a -side=go process")
	flag.IntVar(&o.steps, "steps", 20, "measured optimizer steps per run")
	flag.IntVar(&o.warmup, "warmup", 3, "unmeasured steps first (caches, page faults, thread start-up)")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds of alternating measurements")
	flag.IntVar(&o.batch, "batch", 16, "sequences per step (of 128 tokens)")
	flag.StringVar(&o.goThreads, "go-threads", "2", "comma-separated thread counts for narrowband (\"\": skip)")
	flag.StringVar(&o.torchThreads, "torch-threads", "1,2", "comma-separated OPENBLAS_NUM_THREADS values for PyTorch (\"\": skip)")
	flag.BoolVar(&o.pipeline, "pipeline", false, "also run the 2-stage, 2-core pipeline against PyTorch on one core")
	flag.IntVar(&o.micro, "micro", 4, "micro-batches per step in the pipeline")
	flag.StringVar(&o.python, "python", "/usr/bin/python3", "Python with torch (Debian: apt-get install -y python3-torch)")
	flag.StringVar(&o.script, "script", "", "train_torch.py (default: next to this source)")
	flag.StringVar(&o.src, "src", "", "text folder both sides train on (default: $(go env GOROOT)/src)")
	flag.Parse()
	var err error
	switch *side {
	case "":
		err = orchestrate(o)
	case "go":
		err = runWhole(o, *threads)
	case "pipeline":
		err = runPipeline(o)
	default:
		err = fmt.Errorf("unknown -side %q (want go or pipeline)", *side)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vs-pytorch:", err)
		os.Exit(1)
	}
}

func orchestrate(o options) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary to re-run as the narrowband side: %w", err)
	}
	if o.script == "" {
		o.script = filepath.Join("experiments", "vs-pytorch", "train_torch.py")
	}
	if o.src == "" {
		o.src = filepath.Join(runtime.GOROOT(), "src")
		if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
			o.src = filepath.Join(strings.TrimSpace(string(out)), "src")
		}
	}
	torchOK := true
	if out, err := exec.Command(o.python, "-c", "import torch").CombinedOutput(); err != nil {
		torchOK = false
		fmt.Printf("PyTorch not usable with %s (%v: %s)\n  install it with: apt-get install -y python3-torch libopenblas0-pthread\n  measuring narrowband alone.\n",
			o.python, err, strings.TrimSpace(string(out)))
	} else if _, err := os.Stat(o.script); err != nil {
		return fmt.Errorf("PyTorch script: %w (run from the repository root or pass -script)", err)
	}
	taskset, _ := exec.LookPath("taskset")
	common := []string{"-steps", fmt.Sprint(o.steps), "-warmup", fmt.Sprint(o.warmup), "-batch", fmt.Sprint(o.batch), "-src", o.src}
	torchArgs := []string{o.script, "--steps", fmt.Sprint(o.steps), "--warmup", fmt.Sprint(o.warmup), "--batch", fmt.Sprint(o.batch), "--src", o.src}
	fmt.Printf("GPT 4 layers, d=256, 4 heads, context 128, byte vocab, batch %d; %d measured steps after %d warm-up; %d CPUs, load %s\n",
		o.batch, o.steps, o.warmup, runtime.NumCPU(), loadAvg())

	var all []result
	add := func(r result) {
		fmt.Printf("  %-62s %6.0f tokens/s  %6.0f tokens/CPU-s  %5.0f MB", r.Label, r.TokensPerS, r.TokensPerCPUS, float64(r.PeakRSS)/1e6)
		if r.DriverCPUS > 0 {
			fmt.Printf("  (+ driver %.2f of the stages' %.2f CPU-s)", r.DriverCPUS, r.CPUS)
		}
		fmt.Println()
		all = append(all, r)
	}
	for r := 0; r < o.rounds; r++ {
		fmt.Printf("round %d\n", r+1)
		for _, th := range list(o.goThreads) {
			res, err := runJSON(exec.Command(self, append([]string{"-side", "go", "-threads", th}, common...)...))
			if err != nil {
				return fmt.Errorf("narrowband side (threads %s): %w", th, err)
			}
			res.Label = "narrowband threads=" + th
			add(res)
		}
		for _, th := range list(o.torchThreads) {
			if !torchOK {
				break
			}
			res, err := runJSON(torchCmd(o.python, torchArgs, th, ""))
			if err != nil {
				return fmt.Errorf("pytorch side (OPENBLAS_NUM_THREADS=%s): %w", th, err)
			}
			res.Label = "pytorch OPENBLAS_NUM_THREADS=" + th
			if res.BLAS != "openblas" {
				fmt.Printf("warning: this torch runs on %q BLAS, not OpenBLAS; install libopenblas0-pthread for the real baseline\n", res.BLAS)
			}
			add(res)
		}
		if o.pipeline {
			res, err := runJSON(exec.Command(self, append([]string{"-side", "pipeline", "-micro", fmt.Sprint(o.micro)}, common...)...))
			if err != nil {
				return fmt.Errorf("2-stage pipeline: %w", err)
			}
			add(res) // labelled by the side, with the cores its stages ran on
			if torchOK {
				res, err := runJSON(torchCmd(o.python, torchArgs, "1", taskset))
				if err != nil {
					return fmt.Errorf("pytorch on one core: %w", err)
				}
				res.Label = "pytorch 1 thread, pinned to core 0"
				add(res)
			}
		}
	}
	report(all)
	return nil
}

// torchCmd runs train_torch.py with OpenBLAS bounded to threads and its
// core-type overrides removed (they select a slower kernel here, DESIGN.md),
// optionally pinned to core 0.
func torchCmd(python string, args []string, threads, taskset string) *exec.Cmd {
	var cmd *exec.Cmd
	if taskset != "" {
		cmd = exec.Command(taskset, append([]string{"-c", "0", python}, args...)...)
	} else {
		cmd = exec.Command(python, args...)
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OPENBLAS_") || strings.HasPrefix(kv, "OMP_NUM_THREADS=") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, "OPENBLAS_NUM_THREADS="+threads, "OMP_NUM_THREADS="+threads)
	return cmd
}

// runJSON runs cmd and decodes the last line of its standard output.
func runJSON(cmd *exec.Cmd) (result, error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("%s: %w: %s", cmd.Path, err, lastLines(errb.String(), 5))
	}
	return lastJSON(out.Bytes())
}

func lastJSON(b []byte) (result, error) {
	var last string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "{") {
			last = l
		}
	}
	var r result
	if last == "" {
		return r, errors.New("no JSON result line in the output")
	}
	if err := json.Unmarshal([]byte(last), &r); err != nil {
		return r, fmt.Errorf("decode result %q: %w", last, err)
	}
	return r, nil
}

// list splits a comma-separated flag; "" is an empty list (skip that side).
func list(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

func report(all []result) {
	// Average each label over rounds.
	type agg struct {
		n                 int
		tps, tpc, rss, lo float64
	}
	var order []string
	m := map[string]*agg{}
	for _, r := range all {
		a, ok := m[r.Label]
		if !ok {
			a = &agg{}
			m[r.Label] = a
			order = append(order, r.Label)
		}
		a.n++
		a.tps += r.TokensPerS
		a.tpc += r.TokensPerCPUS
		a.rss = max(a.rss, float64(r.PeakRSS))
		a.lo += r.Loss
	}
	shas := map[string]bool{}
	for _, r := range all {
		shas[r.DataSHA] = true
	}
	if len(shas) > 1 {
		fmt.Printf("warning: the sides trained on different text (SHA-256 prefixes %v)\n", shas)
	}
	var bestTorch, bestTorchCPU, torchRSS, oneCore float64
	for _, l := range order {
		a := m[l]
		if strings.HasPrefix(l, "pytorch OPENBLAS") {
			bestTorch = max(bestTorch, a.tps/float64(a.n))
			bestTorchCPU = max(bestTorchCPU, a.tpc/float64(a.n))
			if torchRSS == 0 || a.rss < torchRSS {
				torchRSS = a.rss
			}
		}
		if strings.HasPrefix(l, "pytorch 1 thread, pinned") {
			oneCore = a.tps / float64(a.n)
		}
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "side\ttokens/s\ttokens/CPU-s\tpeak RSS MB\tlast loss\tvs best PyTorch (wall, CPU)\t")
	for _, l := range order {
		a := m[l]
		n := float64(a.n)
		ratio := "-"
		if bestTorch > 0 && strings.HasPrefix(l, "narrowband") {
			ratio = fmt.Sprintf("%.2fx, %.2fx", a.tps/n/bestTorch, a.tpc/n/bestTorchCPU)
			if strings.Contains(l, "2 stages") && oneCore > 0 {
				ratio += fmt.Sprintf(" (%.2fx PyTorch on 1 core)", a.tps/n/oneCore)
			}
		}
		fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.0f\t%.3f\t%s\t\n", l, a.tps/n, a.tpc/n, a.rss/1e6, a.lo/n, ratio)
	}
	w.Flush()
	fmt.Printf("load average now %s; means over rounds; peak RSS is the max over rounds (the pipeline's is both processes summed)\n", loadAvg())
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
