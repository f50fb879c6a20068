package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/stages"
	"github.com/narrowband/narrowband/stages/kernels"
)

// dataSeed picks the training windows (data.Batch); both stage processes
// derive the same ones from it.
const dataSeed = 1

// lr is small and constant: this measures speed, not a training recipe.
const lr = 1e-4

// textLimit bounds the training text both sides read: the same first
// 8 MiB of .go files (sorted walk, no tests, no testdata) as
// train_torch.py's load_bytes, so both train on identical bytes and neither
// side's peak memory is the corpus.
const textLimit = 8 << 20

// textSHA identifies the text loadText read (printed with the result).
var textSHA string

func loadText(o options) ([]byte, error) {
	var out []byte
	var walk func(dir string) error
	walk = func(dir string) error {
		ents, err := os.ReadDir(dir) // sorted by name, as the Python side sorts
		if err != nil {
			return err
		}
		// os.walk lists a folder's files before descending into its
		// subfolders: do the same.
		for _, e := range ents {
			n := e.Name()
			if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, n))
			if err != nil {
				return err
			}
			out = append(out, b...)
			if len(out) >= textLimit {
				out = out[:textLimit]
				return io.EOF
			}
		}
		for _, e := range ents {
			if e.IsDir() && e.Name() != "testdata" {
				if err := walk(filepath.Join(dir, e.Name())); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(o.src); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read the training text under %s: %w (pass -src a folder of .go files)", o.src, err)
	}
	sum := sha256.Sum256(out)
	textSHA = hex.EncodeToString(sum[:8])
	if len(out) < 2*129 {
		return nil, fmt.Errorf("only %d bytes of .go files under %s: pass -src a folder of Go source", len(out), o.src)
	}
	return out, nil
}

// runWhole trains the whole model in this process and prints its result.
func runWhole(o options, threads int) error {
	if threads > 0 {
		runtime.GOMAXPROCS(threads)
		kernels.SetThreads(threads)
	}
	text, err := loadText(o)
	if err != nil {
		return err
	}
	cfg := stages.DefaultConfig()
	B, T := o.batch, cfg.BlockSize
	s, err := stages.NewStage(cfg, 0, cfg.NLayer, true, true, B, 1)
	if err != nil {
		return err
	}
	opt, err := stages.NewAdamW(s.Params(), stages.DefaultAdamWConfig())
	if err != nil {
		return err
	}
	x, y := make([]int32, B*T), make([]int32, B*T)
	var loss float32
	step := func(i int) error {
		data.Batch(text, dataSeed, i, 0, B, T, x, y)
		s.ZeroGrad()
		if loss, err = s.ForwardLoss(0, B, T, x, nil, y); err != nil {
			return err
		}
		if _, err := s.Backward(0, nil, 1); err != nil {
			return err
		}
		opt.Step(lr)
		return nil
	}
	return measure(o, "go", step, func() float64 { return float64(loss) })
}

// measure runs warm-up steps, then o.steps timed ones, and prints the
// result line (wall and CPU time of the timed steps, peak RSS).
func measure(o options, side string, step func(int) error, loss func() float64) error {
	for i := 0; i < o.warmup; i++ {
		if err := step(i); err != nil {
			return fmt.Errorf("warm-up step %d: %w", i, err)
		}
	}
	w0, c0 := time.Now(), cpuSeconds()
	for i := 0; i < o.steps; i++ {
		if err := step(o.warmup + i); err != nil {
			return fmt.Errorf("step %d: %w", o.warmup+i, err)
		}
	}
	wall, cpu := time.Since(w0).Seconds(), cpuSeconds()-c0
	tokens := o.steps * o.batch * stages.DefaultConfig().BlockSize
	return json.NewEncoder(os.Stdout).Encode(result{
		Side: side, Steps: o.steps, Tokens: tokens, WallS: wall, CPUS: cpu,
		TokensPerS: float64(tokens) / wall, TokensPerCPUS: float64(tokens) / cpu,
		Loss: loss(), PeakRSS: vmHWM(), DataSHA: textSHA,
	})
}

// runStage is one process of the 2-stage pipeline: blocks [0, 2) with the
// embeddings (stage 0) or [2, 4) with the head and loss (stage 1), one
// thread, reading from fd 3 and writing to fd 4 (see runPipeline).
func runStage(o options, last bool) error {
	runtime.GOMAXPROCS(1)
	kernels.SetThreads(1)
	text, err := loadText(o)
	if err != nil {
		return err
	}
	step, loss, err := newStageStep(o, text, last, os.NewFile(3, "in"), os.NewFile(4, "out"))
	if err != nil {
		return err
	}
	side := "stage0"
	if last {
		side = "stage1"
	}
	return measure(o, side, step, loss)
}

// newStageStep builds one pipeline stage's training step, exchanging
// activations, gradients and the tied embedding's gradient with the other
// stage through in and out. loss reports the last step's mean loss (stage
// 1; 0 on stage 0).
func newStageStep(o options, text []byte, last bool, inR io.Reader, outW io.Writer) (step func(int) error, loss func() float64, err error) {
	cfg := stages.DefaultConfig()
	M, T := o.micro, cfg.BlockSize
	if M < 1 || o.batch%M != 0 {
		return nil, nil, fmt.Errorf("-micro %d must divide -batch %d", M, o.batch)
	}
	mb := o.batch / M
	lo, hi := 0, cfg.NLayer/2
	if last {
		lo, hi = cfg.NLayer/2, cfg.NLayer
	}
	s, err := stages.NewStage(cfg, lo, hi, !last, last, mb, M)
	if err != nil {
		return nil, nil, err
	}
	opt, err := stages.NewAdamW(s.Params(), stages.DefaultAdamWConfig())
	if err != nil {
		return nil, nil, err
	}
	in, out := bufio.NewReaderSize(inR, 1<<20), bufio.NewWriterSize(outW, 1<<20)
	N := mb * T * cfg.NEmbd
	buf := make([]float32, N)
	tied := s.TiedWeight().Grad
	other := make([]float32, len(tied))
	x, y := make([]int32, mb*T), make([]int32, mb*T)
	var lossSum float64
	step = func(i int) error {
		s.ZeroGrad()
		// GPipe: every micro-batch forward, then every one backward. Stage
		// 1 starts backward only after reading all activations, so
		// neither side blocks writing into a full pipe the other is not
		// reading.
		lossSum = 0
		for m := 0; m < M; m++ {
			data.Batch(text, dataSeed, i, m, mb, T, x, y)
			if !last {
				act, err := s.Forward(m, mb, T, x, nil)
				if err != nil {
					return err
				}
				if err := writeFloats(out, act); err != nil {
					return err
				}
				continue
			}
			if err := readFloats(in, buf); err != nil {
				return err
			}
			l, err := s.ForwardLoss(m, mb, T, nil, buf, y)
			if err != nil {
				return err
			}
			lossSum += float64(l) / float64(M)
		}
		if err := out.Flush(); err != nil {
			return err
		}
		for m := 0; m < M; m++ {
			if !last {
				if err := readFloats(in, buf); err != nil {
					return err
				}
				if _, err := s.Backward(m, buf, 0); err != nil {
					return err
				}
				continue
			}
			d, err := s.Backward(m, nil, 1/float32(M))
			if err != nil {
				return err
			}
			if err := writeFloats(out, d); err != nil {
				return err
			}
		}
		if err := out.Flush(); err != nil {
			return err
		}
		// Sum the tied embedding's two gradient copies: stage 0 sends
		// first, stage 1 receives first, so the pipes never fill both ways.
		if !last {
			if err := writeFloats(out, tied); err != nil {
				return err
			}
			if err := out.Flush(); err != nil {
				return err
			}
			if err := readFloats(in, other); err != nil {
				return err
			}
		} else {
			if err := readFloats(in, other); err != nil {
				return err
			}
			if err := writeFloats(out, tied); err != nil {
				return err
			}
			if err := out.Flush(); err != nil {
				return err
			}
		}
		for k, g := range other {
			tied[k] += g
		}
		opt.Step(lr)
		return nil
	}
	return step, func() float64 { return lossSum }, nil
}

func floatBytes(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
}

// writeFloats and readFloats move raw native-endian float32s: both ends
// are processes of this binary on this machine.
func writeFloats(w io.Writer, x []float32) error {
	if _, err := w.Write(floatBytes(x)); err != nil {
		return fmt.Errorf("write to the other stage: %w", err)
	}
	return nil
}

func readFloats(r io.Reader, x []float32) error {
	if _, err := io.ReadFull(r, floatBytes(x)); err != nil {
		return fmt.Errorf("read from the other stage: %w", err)
	}
	return nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// vmHWM is this process's peak resident set size (Linux); 0 if unknown.
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
