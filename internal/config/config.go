package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// Config is a whole experiment. Field comments are the reference; keep
// docs/config.md in step with them.
type Config struct {
	Run         Run         `toml:"run"`
	Data        Data        `toml:"data"`
	Model       Model       `toml:"model"`
	Train       Train       `toml:"train"`
	Pipeline    Pipeline    `toml:"pipeline"`
	Network     Network     `toml:"network"`
	Compression Compression `toml:"compression"`
	Web         Web         `toml:"web"`
	Simulate    Simulate    `toml:"simulate"`
	Faults      Faults      `toml:"faults"`
	Verify      Verify      `toml:"verify"`
	// Sweep lists values to vary: each key is "section.key", each value a
	// list; a run with a sweep runs every combination (see Variants).
	Sweep map[string]any `toml:"sweep"`
	// Variant lists named sets of overrides ("section.key" = value, and
	// an optional name); a run with variants runs each of them (times
	// every combination of Sweep).
	Variant []map[string]any `toml:"variant"`
}

// Run names the run and fixes its randomness and length.
type Run struct {
	Name  string `toml:"name"`  // used for the output folder and reports
	Seed  Seed   `toml:"seed"`  // drives init, data order and every codec basis
	Steps int    `toml:"steps"` // optimizer steps
	Out   string `toml:"out"`   // output folder; "" means runs/<name>
	// KeyFile is the coordinator's identity key, which signs the run's
	// ledger; "" is the user's (~/.config/narrowband/peer.key), made on
	// first use.
	KeyFile string `toml:"key_file"`
}

// Seed is a run's seed: any unsigned 64-bit number. TOML integers stop at
// 2^63-1, so larger seeds are written (and may be given) as a quoted
// decimal string; a negative number is refused instead of wrapping around.
type Seed uint64

// UnmarshalTOML takes a non-negative integer or a decimal string.
func (s *Seed) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("run.seed = %d: must be an unsigned integer (0 to 18446744073709551615)", x)
		}
		*s = Seed(x)
		return nil
	case string:
		n, err := strconv.ParseUint(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return fmt.Errorf("run.seed = %q: must be an unsigned integer (0 to 18446744073709551615)", x)
		}
		*s = Seed(n)
		return nil
	}
	return fmt.Errorf("run.seed = %v: must be an unsigned integer", v)
}

// MarshalTOML writes the seed so that it reads back: an integer up to
// 2^63-1, a quoted string above.
func (s Seed) MarshalTOML() ([]byte, error) {
	if uint64(s) > math.MaxInt64 {
		return []byte(strconv.Quote(strconv.FormatUint(uint64(s), 10))), nil
	}
	return []byte(strconv.FormatUint(uint64(s), 10)), nil
}

// Data says what text to train on.
type Data struct {
	// Path is where the text is: a file, a folder or a glob ("corpus/**/*.md"),
	// or a list of them; "" means the Go standard library's source under
	// $(go env GOROOT)/src (non-test .go files outside testdata). Files
	// ending in .jsonl are JSON Lines, one document per line's "text";
	// others are plain text, one document per file.
	Path Paths `toml:"path"`
	// ValFraction is the share of documents held out for evaluation (by a
	// hash of a file's path, or of a JSON Lines record's text, so the split
	// never changes). A single document is split by its last tokens instead.
	ValFraction float64 `toml:"val_fraction"`
	// Extensions limits folders and globs to files with these endings;
	// empty means ".go" for the default corpus and every file otherwise.
	Extensions []string `toml:"extensions"`
	// Include and Exclude are glob patterns for files found in folders and
	// by globs (a file named in path is always read): without a slash a
	// pattern matches the base name ("*.md", "vendor"), with one the path
	// below the folder ("docs/**/*.md"). Exclude also skips folders.
	Include []string `toml:"include"`
	Exclude []string `toml:"exclude"`
	// Tokenizer is "bytes" (one token per byte, vocab_size ≤ 256) or the
	// path of a tokenizer.json from `narrowband tokenizer train`, whose
	// vocabulary model.vocab_size must equal.
	Tokenizer string `toml:"tokenizer"`
	// CacheDir holds the encoded corpora of tokenized runs (memory-mapped
	// by later runs); "" is $XDG_CACHE_HOME/narrowband/tokens.
	CacheDir string `toml:"cache_dir"`
	// MaxBytes bounds the text read; a corpus larger is refused, by its
	// files' sizes, before it is read. 0: half of the memory this machine
	// has available once the model is allocated. A tokenized corpus is
	// never held as text: the bound applies to the ids held while it is
	// encoded, and not to ids mapped from the cache.
	MaxBytes int64 `toml:"max_bytes"`
}

// TokenizerBytes is data.tokenizer's value for the byte vocabulary.
const TokenizerBytes = "bytes"

// Bytes reports whether the run's tokens are bytes (no tokenizer file).
func (d Data) Bytes() bool { return d.Tokenizer == "" || d.Tokenizer == TokenizerBytes }

// Paths is data.path: one string (as every config before lists had) or
// an array of them.
type Paths []string

// UnmarshalTOML takes a string or an array of strings; "" is no path.
func (p *Paths) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		*p = nil
		if x != "" {
			*p = Paths{x}
		}
		return nil
	case []any:
		out := Paths{}
		for _, e := range x {
			s, ok := e.(string)
			if !ok || s == "" {
				return fmt.Errorf("data.path = %v: every entry must be a non-empty string (a file, folder or glob)", v)
			}
			out = append(out, s)
		}
		*p = out
		return nil
	}
	return fmt.Errorf("data.path = %v: must be a string or an array of strings", v)
}

// MarshalTOML writes one path as a string (so resolved configs read as
// they always did), several as an array.
func (p Paths) MarshalTOML() ([]byte, error) {
	if len(p) <= 1 {
		s := ""
		if len(p) == 1 {
			s = p[0]
		}
		return []byte(strconv.Quote(s)), nil
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i, s := range p {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(s))
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}

// Model is the model's shape: the engine's own config (stages.Config
// documents every key), one definition and one validator for the [model]
// table.
type Model = stages.Config

// Train is the optimization.
type Train struct {
	BatchSize    int     `toml:"batch_size"`    // sequences per optimizer step
	MicroBatches int     `toml:"micro_batches"` // batch_size is split into this many micro-batches
	LearningRate float64 `toml:"learning_rate"` // peak, after warm-up
	MinLR        float64 `toml:"min_lr"`        // end of the cosine decay
	WarmupSteps  int     `toml:"warmup_steps"`
	WeightDecay  float64 `toml:"weight_decay"` // decoupled, on 2-D weight matrices only
	Beta1        float64 `toml:"beta1"`
	Beta2        float64 `toml:"beta2"`
	Eps          float64 `toml:"eps"`
	GradClip     float64 `toml:"grad_clip"` // global norm; 0 disables (async: per stage, grad_clip/√S each)
	// Optimizer is "adamw" (the default) or "nadamw" (Nesterov momentum in
	// AdamW, stages.AdamWConfig.Nesterov, with MomentumDecay: the paper's
	// code's optimizer for the async schedule, docs/async.md).
	Optimizer     string  `toml:"optimizer"`
	MomentumDecay float64 `toml:"momentum_decay"` // nadamw's ψ (torch's momentum_decay)
	// DelayCorrection (async only) corrects for stale gradients:
	// "none" (plain delayed AdamW) or "nesterov" (the weight look-ahead,
	// stages.AdamW.SetDelayCorrection).
	DelayCorrection stages.DelayCorrection `toml:"delay_correction"`

	EvalInterval       int `toml:"eval_interval"`       // steps between held-out evaluations; 0: only at the end
	EvalBatches        int `toml:"eval_batches"`        // batches of batch_size windows per evaluation
	CheckpointInterval int `toml:"checkpoint_interval"` // steps between checkpoints; 0: by time only
	// CheckpointMinutes also checkpoints once this many minutes passed
	// since the last one, so an interrupted or failed run loses minutes of
	// work, not hours; 0 disables.
	CheckpointMinutes float64 `toml:"checkpoint_minutes"`
	Threads           int     `toml:"threads"`      // compute threads per process; 0: all cores
	LogInterval       int     `toml:"log_interval"` // steps between plain log lines when not on a terminal
}

// Pipeline is how the model is cut and scheduled.
type Pipeline struct {
	Stages   int                `toml:"stages"`   // pipeline stages
	Split    []int              `toml:"split"`    // blocks per stage; empty balances compute
	Schedule scheduler.Schedule `toml:"schedule"` // "gpipe", "1f1b" or "async" (scheduler.ParseSchedule)
	// Lookahead (1F1B): stage i warms up with lookahead·(S-i-1) forwards;
	// 0 or 1 is standard 1F1B. More hides link round trips (latency) at
	// the price of activation memory: see scheduler.LookaheadFor.
	Lookahead int `toml:"lookahead"`
	// InFlight (async): the in-flight depth per hop, D; stage i keeps
	// D·(S-i-1)+1 micro-batches in flight. 0 picks it from the link round
	// trip and the compute time (scheduler.InFlightFor; docs/async.md).
	InFlight int `toml:"in_flight"`
	// Replicas is how many peers hold each stage (docs/swarm.md): each
	// computes its share of the step's micro-batches (micro-batch m on
	// replica m mod R), and the replicas of a stage sum their weight
	// gradients among themselves before the optimizer step. 1 (default):
	// one holder a stage.
	Replicas int `toml:"replicas"`
	// Routing spreads each step's micro-batches over a stage's replicas:
	// "round-robin" (default: micro-batch m to replica m mod R, so a run
	// is reproducible) or "throughput" (SWARM's: in proportion to each
	// replica's measured rate).
	Routing string `toml:"routing"`
	// SlowFraction and SlowSteps: a replica below SlowFraction of its
	// stage's median rate for SlowSteps steps gets half the micro-batches;
	// as long again, it is dropped. 0 (default): never.
	SlowFraction float64 `toml:"slow_fraction"`
	SlowSteps    int     `toml:"slow_steps"`
	Transport    string  `toml:"transport"` // "inproc" or "webrtc"
	Processes    bool    `toml:"processes"` // one OS process per stage

	// WebRTC runs (transport = "webrtc"):
	// SignalAddr is where this run's signaling server listens
	// ("127.0.0.1:0" by default; a reachable address lets peers on other
	// machines join with `narrowband peer`).
	SignalAddr string `toml:"signal_addr"`
	// LocalPeers is how many peer processes the run starts on this machine;
	// -1 (default) starts one per stage plus spares. Fewer waits for
	// peers that join from elsewhere.
	LocalPeers int `toml:"local_peers"`
	// Spares is how many extra peers wait to take over a failed stage.
	Spares int `toml:"spares"`
	// SecretFile holds the run's secret; "" makes a random one and writes
	// it to <out>/secret (mode 0600) for remote peers.
	SecretFile string `toml:"secret_file"`
	// ICEServers are STUN/TURN URLs for peers behind NAT, e.g.
	// "stun:stun.example.org:3478"; empty uses host candidates only.
	ICEServers []string `toml:"ice_servers"`
	// Loopback restricts WebRTC to loopback candidates (every peer on this
	// machine).
	Loopback bool `toml:"loopback"`
	// TURNAddr, if set, hosts STUN and TURN on this UDP address beside the
	// run's signaling server (credentials derived from the run's secret),
	// so peers behind NAT need no third-party server; PublicIP is the
	// address peers reach it at.
	// The run's own peers and coordinator use that server (stun: and turn:
	// URLs are added to ICEServers), and the join command it prints names it.
	TURNAddr string `toml:"turn_addr"`
	PublicIP string `toml:"public_ip"`
	// RelayOnly makes every WebRTC link go through a TURN relay (ICE
	// transport policy "relay"): hides peers' addresses from each other, or
	// tests the relay path. Needs turn_addr or a turn: URL in ice_servers.
	RelayOnly bool `toml:"relay_only"`
	// AllowKeys, if not empty, are the only peer keys (ed25519 public keys,
	// 64 hex digits, as `narrowband peer` logs its own) the run admits; a
	// peer proves its key when the coordinator connects.
	AllowKeys []string `toml:"allow_keys"`
}

// Network shapes every link between stages; Links override single links.
type Network struct {
	BandwidthMbps float64 `toml:"bandwidth_mbps"` // per direction; 0 = unlimited
	LatencyMs     float64 `toml:"latency_ms"`     // one-way
	JitterMs      float64 `toml:"jitter_ms"`
	Loss          float64 `toml:"loss"` // packet loss probability, seen as retransmission delay
	Links         []Link  `toml:"link"`
}

// Link overrides the network profile for the link between two adjacent stages.
type Link struct {
	From          int      `toml:"from"`
	To            int      `toml:"to"`
	BandwidthMbps *float64 `toml:"bandwidth_mbps"`
	LatencyMs     *float64 `toml:"latency_ms"`
	JitterMs      *float64 `toml:"jitter_ms"`
	Loss          *float64 `toml:"loss"`
}

// Compression is what crosses each stage boundary: the codec package's own
// config (compression.Config documents every key and its default).
type Compression = compression.Config

// Simulate tunes `narrowband simulate`, which predicts a run's step time
// from per-stage compute times and the link profile.
type Simulate struct {
	// ForwardMs, BackwardMs: compute per micro-batch per stage (one value
	// for every stage, or one per stage); empty = measured on this machine.
	ForwardMs  []float64 `toml:"forward_ms"`
	BackwardMs []float64 `toml:"backward_ms"`
	// OptimizerMs per step per stage (one value or one per stage).
	OptimizerMs []float64 `toml:"optimizer_ms"`
	// Speedup divides measured compute times: e.g. 50 projects this CPU's
	// timings to a GPU about 50× faster.
	Speedup float64 `toml:"speedup"`
	// Steps simulated (the steady state is measured from the second on).
	Steps int `toml:"steps"`
}

// Web is the live view.
type Web struct {
	Addr string `toml:"addr"` // e.g. "127.0.0.1:8080"; "" disables; "127.0.0.1:0" picks a free port on loopback (a wider bind shows the run to the network)
	// Contribute lets the view's visitors contribute: the page offers a
	// Contribute control, and a tab that takes it joins the run's room as
	// a peer with a join token scoped to the room (not the secret); it
	// computes a vacant stage or waits as a spare (docs/browser.md). Needs
	// pipeline.transport = "webrtc".
	Contribute bool `toml:"contribute"`
}

// Default is the configuration every file starts from: a small GPT on the Go
// standard library that beats a 4-gram model in a few minutes on two cores.
func Default() Config {
	return Config{
		Run:   Run{Name: "default", Seed: 1337, Steps: 1000},
		Data:  Data{ValFraction: 0.01, Tokenizer: TokenizerBytes},
		Model: Model{NLayer: 4, NHead: 4, NEmbd: 256, BlockSize: 128, VocabSize: 256, Bias: true},
		Train: Train{
			BatchSize: 16, MicroBatches: 1,
			LearningRate: 2e-3, MinLR: 2e-4, WarmupSteps: 50,
			WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, GradClip: 1.0,
			Optimizer: "adamw", MomentumDecay: 0.004,
			EvalInterval: 100, EvalBatches: 8, CheckpointInterval: 0, CheckpointMinutes: 10, LogInterval: 10,
		},
		Pipeline:    Pipeline{Stages: 1, Replicas: 1, Schedule: scheduler.OneFOneB, Transport: "inproc", SignalAddr: "127.0.0.1:0", LocalPeers: -1, Loopback: true},
		Simulate:    Simulate{Speedup: 1, Steps: 4},
		Faults:      defaultFaults(),
		Verify:      defaultVerify(),
		Compression: compression.DefaultConfig(),
	}
}

// Load reads a TOML file over Default, applies overrides ("section.key=value"),
// and validates the result.
func Load(path string, overrides []string) (Config, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg := Default()
	if err := decodeStrict(string(text), path, &cfg); err != nil {
		return Config{}, err
	}
	for _, o := range overrides {
		if err := cfg.Set(o); err != nil {
			return Config{}, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, locate(err, path, string(text))
	}
	return cfg, nil
}

// LoadRun is Load for a run about to start: it also reads the files the
// config names that must agree with it (data.tokenizer's vocabulary and
// model.vocab_size), with the file and line in each problem. Load alone
// reads nothing but the config, so a config can be checked, and a run
// folder's config.toml read back, where those files are not.
func LoadRun(path string, overrides []string) (Config, error) {
	cfg, err := Load(path, overrides)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.CheckTokenizer(); err != nil {
		text, _ := os.ReadFile(path)
		return Config{}, locate(err, path, string(text))
	}
	return cfg, nil
}

// locate puts the file and line of its key in front of each problem of a
// validation error ("exp.toml:12: compression.rank = ..."); a key the file
// does not set (a default, or a --set override) gets the file alone.
func locate(err error, path, text string) error {
	var errs []error
	for _, e := range unjoin(err) {
		var k interface{ ConfigKey() string }
		line := 0
		if errors.As(e, &k) {
			line = keyLine(text, strings.Split(k.ConfigKey(), "."))
		}
		if line > 0 {
			errs = append(errs, fmt.Errorf("%s:%d: %w", path, line, e))
		} else {
			errs = append(errs, fmt.Errorf("%s: %w", path, e))
		}
	}
	return errors.Join(errs...)
}

// unjoin lists the errors errors.Join joined, recursively.
func unjoin(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, unjoin(e)...)
	}
	return out
}

// Parse decodes TOML text over Default without validating; name is used in
// error messages.
func Parse(text, name string) (Config, error) {
	cfg := Default()
	err := decodeStrict(text, name, &cfg)
	return cfg, err
}

func decodeStrict(text, name string, cfg *Config) error {
	md, err := toml.Decode(text, cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("%s:%d: %s", name, pe.Position.Line, pe.Message)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, k := range md.Undecoded() {
		if len(k) > 1 && (k[0] == "sweep" || k[0] == "variant") {
			continue // free-form: checked by Variants
		}
		return fmt.Errorf("%s:%d: unknown key %q (see docs/config.md for the keys each section takes)",
			name, keyLine(text, k), k.String())
	}
	return nil
}

// Set applies one "section.key=value" override. The value is read as a TOML
// value (so numbers, booleans, arrays and quoted strings work); a bare word
// that is not valid TOML is taken as a string, so --set compression.method=int8
// works without shell-quoting.
func (c *Config) Set(override string) error {
	key, val, ok := strings.Cut(override, "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" {
		return fmt.Errorf("--set %q: want section.key=value", override)
	}
	dot := strings.LastIndexByte(key, '.')
	if dot <= 0 || dot == len(key)-1 {
		return fmt.Errorf("--set %q: want section.key=value (e.g. train.steps=200)", override)
	}
	section, field := key[:dot], key[dot+1:]
	val = strings.TrimSpace(val)
	doc := fmt.Sprintf("[%s]\n%s = %s\n", section, field, val)
	if _, err := toml.Decode(doc, &map[string]any{}); err != nil {
		doc = fmt.Sprintf("[%s]\n%s = %q\n", section, field, val)
	}
	md, err := toml.Decode(doc, c)
	if err != nil && strings.Contains(err.Error(), "destination has type slice") && !strings.HasPrefix(val, "[") {
		// A single value for a list key: --set simulate.forward_ms=20.
		return c.Set(key + "=[" + val + "]")
	}
	if err != nil && strings.Contains(err.Error(), "destination has type string") && !strings.HasPrefix(val, `"`) {
		// A number for a string key: --set run.name=42.
		return c.Set(key + "=" + strconv.Quote(val))
	}
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("--set %s: %s", override, pe.Message)
		}
		return fmt.Errorf("--set %s: %w", override, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("--set %s: unknown key %q (see docs/config.md)", override, und[0].String())
	}
	return nil
}

// TOML renders the resolved configuration.
func (c Config) TOML() ([]byte, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// keyLine finds the line on which key is set, following [table] headers; 0 if
// it cannot tell.
func keyLine(text string, key toml.Key) int {
	if len(key) == 0 {
		return 0
	}
	table := ""
	want := strings.Join(key[:len(key)-1], ".")
	last := key[len(key)-1]
	for i, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "[") {
			t := strings.Trim(l, "[] \t")
			if j := strings.IndexByte(t, '#'); j >= 0 {
				t = strings.TrimSpace(strings.Trim(t[:j], "[] \t"))
			}
			table = t
			if table == strings.Join(key, ".") {
				return i + 1
			}
			continue
		}
		k, _, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		k = strings.Trim(strings.TrimSpace(k), `"`)
		full := k
		if table != "" {
			full = table + "." + k
		}
		if (table == want && k == last) || full == strings.Join(key, ".") {
			return i + 1
		}
	}
	return 0
}
