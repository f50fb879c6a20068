package compression

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Rank is a rank setting: a positive integer, or RankAuto to let AutoRank
// choose from the measured link speed. In TOML it is `rank = 16` or
// `rank = "auto"`.
type Rank int

// RankAuto asks for the automatic rank controller (lowrank only).
const RankAuto Rank = -1

func (r Rank) String() string {
	if r == RankAuto {
		return "auto"
	}
	return strconv.Itoa(int(r))
}

// ParseRank parses "auto" or a positive integer.
func ParseRank(s string) (Rank, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "auto") {
		return RankAuto, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%w: compression.rank = %q: want a positive integer or \"auto\"", ErrConfig, s)
	}
	return Rank(n), nil
}

// MarshalText implements encoding.TextMarshaler (JSON).
func (r Rank) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// MarshalTOML writes a rank as a TOML integer and "auto" as a string, as a
// person would write them.
func (r Rank) MarshalTOML() ([]byte, error) {
	if r == RankAuto {
		return []byte(`"auto"`), nil
	}
	return []byte(strconv.Itoa(int(r))), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (--set overrides).
func (r *Rank) UnmarshalText(b []byte) error {
	v, err := ParseRank(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// UnmarshalTOML accepts both an integer and the string "auto" (the
// BurntSushi/toml Unmarshaler interface; no import needed).
func (r *Rank) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x == 0 {
			*r = 0 // unset: what a resolved config of a method without a rank says
			return nil
		}
		if x < 1 || x > maxRank {
			return &KeyError{Key: "compression.rank", Value: x, Allowed: fmt.Sprintf(`want 1..%d or "auto"`, maxRank)}
		}
		*r = Rank(x)
		return nil
	case string:
		return r.UnmarshalText([]byte(x))
	}
	return &KeyError{Key: "compression.rank", Value: v, Allowed: `want an integer or "auto"`}
}

// Config selects and tunes the codec of a link. It is the [compression]
// table of a run's TOML file as it is (internal/config embeds it): one
// definition, one set of defaults, one validator.
type Config struct {
	// Method is the codec: none, fp16, bf16, int8, topk, lowrank,
	// subspace or subspace-tc. Default none: a run compresses only when
	// asked to.
	Method Method `toml:"method"`
	// Rank is r for lowrank (or "auto": chosen from the measured link)
	// and k for subspace and subspace-tc; required by them, ignored by the
	// others. In
	// TOML an integer (`rank = 48`) or "auto"; 0 means unset.
	Rank Rank `toml:"rank"`
	// Precision of topk values, lowrank factors and subspace coefficients:
	// fp32, fp16, bf16; int8, int6, int4, int3, int2 for subspace only.
	// The other methods fix their own format. Default fp32.
	Precision Precision `toml:"precision"`
	// KFraction is the fraction of entries topk sends (TOML key "topk").
	// Default 0.1.
	KFraction float64 `toml:"topk"`
	// BlockSize is the number of values per int8 scale. Default 64, as
	// bitsandbytes' blockwise quantization.
	BlockSize int `toml:"block_size"`
	// PowerIters is lowrank's power iterations per call. Default 1: with
	// a warm start one is what PowerSGD uses.
	PowerIters int `toml:"power_iters"`
	// ErrorFeedback carries what topk/lowrank did not send into the next
	// message. Default false: the next message is another micro-batch's
	// activations, so the leftover belongs to other samples.
	ErrorFeedback bool `toml:"error_feedback"`
	// LZ4 tries lz4 over each payload (and subspace token ids), kept only
	// when it shrinks. Default false: measured gains on float payloads are
	// ~10% at best.
	LZ4 bool `toml:"lz4"`
	// UntieHead gives a subspace run's model a free LM head on the last
	// stage instead of one tied to the constrained token embedding
	// (E0 + a k-dimensional offset); the checkpoint then holds its own
	// lm_head.weight. Subspace only.
	UntieHead bool `toml:"untie_head"`

	// The transform codec's keys (subspace-tc only; see TCOptions).

	// Step is the quantization step relative to the RMS of a message's
	// subspace coefficients. Default 0.5: with rank 96 and grad_step 1.6
	// the setting measured at ≥106× both ways within 2% of none on two
	// seeds (docs/compression-tc.md).
	Step float64 `toml:"step"`
	// GradStep is the step of the gradient direction; 0 means Step.
	// Gradients round stochastically (unbiased), so they tolerate a
	// coarser step than activations. Default 1.6 (see Step).
	GradStep float64 `toml:"grad_step"`
	// Rotation is how the rotation to principal axes reaches the
	// receiver: derived (both ends compute it from decoded data: no bytes),
	// sent (fp16 every rotation_interval messages), off. Default derived.
	Rotation Rotation `toml:"rotation"`
	// RotationInterval is the number of messages between rotation
	// refreshes. Default 16: a few steps of micro-batches, as the weights
	// move slowly.
	RotationInterval int `toml:"rotation_interval"`
	// PredictorDecay is the floor of the per-id predictor's update weight
	// (count mean, then moving average); 0 turns the predictor off.
	// Default 0.02: an id's mean follows its last ~50 rows.
	PredictorDecay float64 `toml:"predictor_decay"`
	// TargetBytesPerToken, if > 0, is a byte budget per token for each
	// direction of each link, frames counted whole: the sender steers its
	// step (step and grad_step are then where it starts) so that the
	// bytes of its messages meet it. 0 (default): a fixed step.
	TargetBytesPerToken float64 `toml:"target_bytes_per_token"`
	// TiedPrecision is the format of the tied-embedding gradient the first
	// and last stage exchange once per step (vocab × n_embd values, or
	// vocab × k coefficients under a subspace codec): fp32 (default, the
	// exact sum), bf16, or int8 (blocks of block_size values with a float32
	// scale, rounded to nearest). Both ends add the two decoded halves, so
	// their copies of the embedding stay identical whatever the format.
	TiedPrecision Precision `toml:"tied_precision"`

	// Replicas is the [compression.replicas] table: the codec of the
	// gradient sum among a stage's replicas (ReduceConfig), a choice of its
	// own, apart from the links' codec above.
	Replicas ReduceConfig `toml:"replicas"`
}

// DefaultConfig returns the defaults documented on Config: no compression.
func DefaultConfig() Config {
	return Config{
		Method:    MethodNone,
		KFraction: 0.1,
		BlockSize: 64,
		Precision: FP32,

		TiedPrecision: FP32,
		PowerIters:    1,

		Step:             0.5,
		GradStep:         1.6,
		Rotation:         RotationDerived,
		RotationInterval: 16,
		PredictorDecay:   0.02,

		Replicas: DefaultReduceConfig(),
	}
}

// A KeyError is one bad setting: the key as a TOML file spells it
// ("compression.rank"), the value, and what is allowed. It is an ErrConfig;
// internal/config puts the file and line of the key in front of it.
type KeyError struct {
	Key     string
	Value   any
	Allowed string
}

func (e *KeyError) Error() string { return fmt.Sprintf("%s = %v: %s", e.Key, e.Value, e.Allowed) }

// ConfigKey names the key, for callers that locate it in a file.
func (e *KeyError) ConfigKey() string { return e.Key }

// Is makes every KeyError an ErrConfig.
func (e *KeyError) Is(target error) bool { return target == ErrConfig }

// Label names the setting briefly, as plots and tables show it: "none",
// "int8", "lowrank r=32", "subspace r=64 fp16", "topk 10% +ef +lz4" (+ef:
// error feedback on).
func (c Config) Label() string {
	s := c.Method.String()
	switch c.Method {
	case MethodLowRank, MethodSubspace:
		if c.Rank != 0 {
			s += " r=" + c.Rank.String()
		}
		if c.Precision != FP32 {
			s += " " + c.Precision.String()
		}
	case MethodTopK:
		s += fmt.Sprintf(" %g%%", 100*c.KFraction)
	case MethodSubspaceTC:
		if c.Rank != 0 {
			s += " r=" + c.Rank.String()
		}
		s += fmt.Sprintf(" step=%g", c.Step)
		if c.GradStep != 0 {
			s += fmt.Sprintf("/%g", c.GradStep)
		}
		if c.Rotation != RotationDerived {
			s += " rot=" + c.Rotation.String()
		}
		if c.PredictorDecay == 0 {
			s += " nopred"
		}
	}
	if c.ErrorFeedback && (c.Method == MethodTopK || c.Method == MethodLowRank) {
		s += " +ef"
	}
	if c.LZ4 {
		s += " +lz4"
	}
	if c.Replicas.Method != ReduceNone && c.Replicas.Method != ReduceUnknown {
		s += " +replicas " + c.Replicas.Label()
	}
	return s
}

// UsesRank reports whether the method reads Rank (lowrank, subspace,
// subspace-tc).
func (m Method) UsesRank() bool {
	return m == MethodLowRank || m == MethodSubspace || m == MethodSubspaceTC
}

// UsesPrecision reports whether the method reads Precision (topk, lowrank,
// subspace); the others fix their own number format.
func (m Method) UsesPrecision() bool {
	return m == MethodTopK || m == MethodLowRank || m == MethodSubspace
}

// Validate reports every bad key, each a *KeyError naming the key, its
// value and what is allowed. A config it accepts builds a codec with New
// for any model width of at least Rank.
func (c Config) Validate() error {
	var errs []error
	bad := func(key string, val any, allowed string) {
		errs = append(errs, &KeyError{Key: "compression." + key, Value: val, Allowed: allowed})
	}
	if c.Method <= MethodUnknown || c.Method > MethodSubspaceTC {
		bad("method", c.Method, "want one of "+strings.Join(idNames[:], ", "))
	}
	switch {
	case c.Rank == RankAuto && c.Method != MethodLowRank:
		bad("rank", `"auto"`, fmt.Sprintf(`"auto" works only with method = "lowrank" (method is %q)`, c.Method))
	case c.Rank == 0 && c.Method.UsesRank():
		bad("rank", "(unset)", fmt.Sprintf(`method %q needs a rank: an integer, or "auto" for lowrank`, c.Method))
	case c.Rank != RankAuto && (c.Rank < 0 || c.Rank > maxRank):
		bad("rank", c.Rank, fmt.Sprintf(`want 1..%d or "auto"`, maxRank))
	}
	if !(c.KFraction > 0 && c.KFraction <= 1) {
		bad("topk", c.KFraction, "want a fraction in (0, 1]")
	}
	if c.BlockSize < 1 || c.BlockSize > maxBlock {
		bad("block_size", c.BlockSize, fmt.Sprintf("want 1..%d", maxBlock))
	}
	switch c.Precision {
	case FP32, FP16, BF16:
	case Int8, Int6, Int4, Int3, Int2:
		if c.Method != MethodSubspace {
			bad("precision", strconv.Quote(c.Precision.String()), `works only with method = "subspace" (for plain int8 use method = "int8")`)
		}
	default:
		bad("precision", c.Precision, "want fp32, fp16, bf16 (or int8, int6, int4, int3, int2 for subspace)")
	}
	switch c.TiedPrecision {
	case FP32, BF16, Int8:
	default:
		bad("tied_precision", strconv.Quote(c.TiedPrecision.String()), "want fp32, bf16 or int8")
	}
	if c.PowerIters < 1 || c.PowerIters > 8 {
		bad("power_iters", c.PowerIters, "want 1..8")
	}
	if c.UntieHead && c.Method != MethodSubspace {
		bad("untie_head", true, `works only with method = "subspace" (other methods leave the LM head tied and free)`)
	}
	switch {
	case c.TargetBytesPerToken != 0 && c.Method != MethodSubspaceTC:
		bad("target_bytes_per_token", c.TargetBytesPerToken, fmt.Sprintf(`works only with method = "subspace-tc" (method is %q); lowrank steers by the link with rank = "auto"`, c.Method))
	case !(c.TargetBytesPerToken >= 0 && c.TargetBytesPerToken <= 1<<20):
		bad("target_bytes_per_token", c.TargetBytesPerToken, "want 0 (a fixed step) or a budget in bytes per token, each way")
	}
	if err := c.Replicas.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Method == MethodSubspaceTC {
		for _, dir := range []Direction{DirForward, DirBackward} {
			o := TCOptionsFrom(c, dir, 0, false, 0)
			if err := o.validate(); err != nil {
				if ke, ok := err.(*KeyError); ok && dir == DirBackward && ke.Key == "compression.step" && c.GradStep != 0 {
					ke.Key = "compression.grad_step"
				} else if dir == DirBackward {
					continue // reported for the forward direction
				}
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// New builds the codec for one link direction of a model of width d (the
// cols of every message) and vocabulary vocab (used by subspace only). seed
// is the run seed: subspace derives U and E0 from it, lowrank its first warm
// start. With Rank = RankAuto lowrank starts at rank 4 (the bottom of
// DefaultLadder); the runtime raises it with LowRank.SetRank as AutoRank
// decides. Subspace returns a *Subspace, which is a TokenCodec.
func New(cfg Config, d, vocab int, seed uint64) (Codec, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d < 1 || d > maxDim {
		return nil, fmt.Errorf("%w: model width d = %d: want 1..%d", ErrConfig, d, maxDim)
	}
	switch cfg.Method {
	case MethodNone:
		return None{}, nil
	case MethodFP16:
		return Half{Format: FP16}, nil
	case MethodBF16:
		return Half{Format: BF16}, nil
	case MethodInt8:
		return Int8Block{BlockSize: cfg.BlockSize}, nil
	case MethodTopK:
		return &TopK{Frac: cfg.KFraction, Precision: cfg.Precision, Feedback: cfg.ErrorFeedback}, nil
	case MethodLowRank:
		r := int(cfg.Rank)
		if cfg.Rank == RankAuto {
			r = 4
		}
		return &LowRank{Rank: r, Iters: cfg.PowerIters, Precision: cfg.Precision, Feedback: cfg.ErrorFeedback, Seed: seed}, nil
	case MethodSubspace:
		if int(cfg.Rank) > d {
			return nil, &KeyError{Key: "compression.rank", Value: cfg.Rank, Allowed: fmt.Sprintf("subspace k must be at most the model width (model.n_embd = %d)", d)}
		}
		s, err := NewSubspace(seed, d, int(cfg.Rank), vocab, cfg.Precision)
		if err != nil {
			return nil, err
		}
		s.LZ4Tokens = cfg.LZ4
		return s, nil
	case MethodSubspaceTC:
		return nil, fmt.Errorf("%w: compression.method = \"subspace-tc\" keeps state at both ends of each link: it is not a stateless Codec: build its ends with NewTCEncoder and NewTCDecoder (the pipeline runtime does, per link direction)", ErrConfig)
	}
	return nil, fmt.Errorf("%w: compression.method = %v", ErrConfig, cfg.Method)
}

// NewLink wraps New's codec with the optional lz4 step of cfg.LZ4.
func NewLink(cfg Config, d, vocab int, seed uint64) (*LinkCodec, error) {
	c, err := New(cfg, d, vocab, seed)
	if err != nil {
		return nil, err
	}
	return &LinkCodec{Codec: c, LZ4: cfg.LZ4, ElemSize: ShuffleWidth(c, cfg.Precision)}, nil
}

// Set assigns one [compression] key from its string form, as a --set
// override or a string-typed config table gives it: method, rank, topk,
// block_size, precision, power_iters, error_feedback, lz4, untie_head,
// step, grad_step, rotation, rotation_interval, predictor_decay,
// tied_precision, target_bytes_per_token, replicas.method, replicas.rank,
// replicas.error_feedback. An empty rank
// keeps the current one (methods without a rank leave it unset).
func (c *Config) Set(key, value string) error {
	var err error
	switch key {
	case "method":
		c.Method, err = ParseMethod(value)
	case "rank":
		if strings.TrimSpace(value) == "" {
			return nil
		}
		c.Rank, err = ParseRank(value)
	case "precision":
		c.Precision, err = ParsePrecision(value)
	case "topk":
		c.KFraction, err = strconv.ParseFloat(strings.TrimSpace(value), 64)
	case "block_size":
		c.BlockSize, err = strconv.Atoi(strings.TrimSpace(value))
	case "power_iters":
		c.PowerIters, err = strconv.Atoi(strings.TrimSpace(value))
	case "error_feedback":
		c.ErrorFeedback, err = strconv.ParseBool(strings.TrimSpace(value))
	case "lz4":
		c.LZ4, err = strconv.ParseBool(strings.TrimSpace(value))
	case "untie_head":
		c.UntieHead, err = strconv.ParseBool(strings.TrimSpace(value))
	case "step":
		c.Step, err = strconv.ParseFloat(strings.TrimSpace(value), 64)
	case "grad_step":
		c.GradStep, err = strconv.ParseFloat(strings.TrimSpace(value), 64)
	case "rotation":
		c.Rotation, err = ParseRotation(value)
	case "rotation_interval":
		c.RotationInterval, err = strconv.Atoi(strings.TrimSpace(value))
	case "predictor_decay":
		c.PredictorDecay, err = strconv.ParseFloat(strings.TrimSpace(value), 64)
	case "tied_precision":
		c.TiedPrecision, err = ParsePrecision(value)
	case "target_bytes_per_token":
		c.TargetBytesPerToken, err = strconv.ParseFloat(strings.TrimSpace(value), 64)
	case "replicas.method":
		c.Replicas.Method, err = ParseReduceMethod(value)
	case "replicas.rank":
		c.Replicas.Rank, err = strconv.Atoi(strings.TrimSpace(value))
	case "replicas.error_feedback":
		c.Replicas.ErrorFeedback, err = strconv.ParseBool(strings.TrimSpace(value))
	default:
		return fmt.Errorf("%w: unknown key compression.%s (known: method, rank, topk, block_size, precision, power_iters, error_feedback, lz4, untie_head, step, grad_step, rotation, rotation_interval, predictor_decay, target_bytes_per_token, tied_precision, replicas.method, replicas.rank, replicas.error_feedback)", ErrConfig, key)
	}
	if err != nil && !errors.Is(err, ErrConfig) {
		err = fmt.Errorf("%w: compression.%s = %q: %v", ErrConfig, key, value, err)
	}
	return err
}
