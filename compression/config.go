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

// MarshalText implements encoding.TextMarshaler.
func (r Rank) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

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
		if x < 1 || x > maxRank {
			return fmt.Errorf("%w: compression.rank = %d: want 1..%d or \"auto\"", ErrConfig, x, maxRank)
		}
		*r = Rank(x)
		return nil
	case string:
		return r.UnmarshalText([]byte(x))
	}
	return fmt.Errorf("%w: compression.rank = %v (%T): want an integer or \"auto\"", ErrConfig, v, v)
}

// Config selects and tunes the codec of a link. It is the [compression]
// table of a run's TOML file.
type Config struct {
	// Method is the codec. Default lowrank: the best bytes-per-token codec
	// that needs no model changes.
	Method Method `toml:"method"`
	// Rank is r for lowrank (or "auto") and k for subspace. Default 32:
	// 1/8 of d=256, ~4% of fp32 bytes per token at fp16.
	Rank Rank `toml:"rank"`
	// KFraction is the fraction of entries topk sends (TOML key "topk",
	// as in internal/config). Default 0.01.
	KFraction float64 `toml:"topk"`
	// BlockSize is the number of values per int8 scale. Default 64, as
	// bitsandbytes' blockwise quantization.
	BlockSize int `toml:"block_size"`
	// Precision of topk values, lowrank factors and subspace coefficients
	// (fp32, fp16, bf16; int8, int6, int4, int3, int2 for subspace). Default fp16: its rounding is
	// far below the truncation error of the codecs it serves.
	Precision Precision `toml:"precision"`
	// PowerIters is lowrank's power iterations per call. Default 1: with
	// a warm start one is what PowerSGD uses.
	PowerIters int `toml:"power_iters"`
	// ErrorFeedback carries what topk/lowrank did not send into the next
	// call. Default true.
	ErrorFeedback bool `toml:"error_feedback"`
	// LZ4 tries lz4 over each payload (and subspace token ids), kept only
	// when it shrinks. Default false: measured gains on float payloads are
	// ~10% at best.
	LZ4 bool `toml:"lz4"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Method:        MethodLowRank,
		Rank:          32,
		KFraction:     0.01,
		BlockSize:     64,
		Precision:     FP16,
		PowerIters:    1,
		ErrorFeedback: true,
	}
}

// Validate reports the first bad key, with its value and what is allowed.
func (c Config) Validate() error {
	if c.Method <= MethodUnknown || c.Method > MethodSubspace {
		return fmt.Errorf("%w: compression.method = %v: want one of %s", ErrConfig, c.Method, strings.Join(idNames[:], ", "))
	}
	if c.Rank == RankAuto && c.Method != MethodLowRank {
		return fmt.Errorf("%w: compression.rank = \"auto\" works only with method = \"lowrank\" (method is %q)", ErrConfig, c.Method)
	}
	if c.Rank != RankAuto && (c.Rank < 1 || c.Rank > maxRank) {
		return fmt.Errorf("%w: compression.rank = %d: want 1..%d or \"auto\"", ErrConfig, c.Rank, maxRank)
	}
	if !(c.KFraction > 0 && c.KFraction <= 1) {
		return fmt.Errorf("%w: compression.topk = %v: want a fraction in (0, 1]", ErrConfig, c.KFraction)
	}
	if c.BlockSize < 1 || c.BlockSize > maxBlock {
		return fmt.Errorf("%w: compression.block_size = %d: want 1..%d", ErrConfig, c.BlockSize, maxBlock)
	}
	switch c.Precision {
	case FP32, FP16, BF16:
	case Int8, Int6, Int4, Int3, Int2:
		if c.Method != MethodSubspace {
			return fmt.Errorf("%w: compression.precision = %q works only with method = \"subspace\" (use method = \"int8\" for plain int8)", ErrConfig, c.Precision.String())
		}
	default:
		return fmt.Errorf("%w: compression.precision = %v: want fp32, fp16, bf16 (or int8, int6, int4, int3, int2 for subspace)", ErrConfig, c.Precision)
	}
	if c.PowerIters < 1 || c.PowerIters > 8 {
		return fmt.Errorf("%w: compression.power_iters = %d: want 1..8", ErrConfig, c.PowerIters)
	}
	return nil
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
			return nil, fmt.Errorf("%w: compression.rank = %d: subspace k must be ≤ model width %d", ErrConfig, cfg.Rank, d)
		}
		s, err := NewSubspace(seed, d, int(cfg.Rank), vocab, cfg.Precision)
		if err != nil {
			return nil, err
		}
		s.LZ4Tokens = cfg.LZ4
		return s, nil
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
// block_size, precision, power_iters, error_feedback, lz4. An empty rank
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
	default:
		return fmt.Errorf("%w: unknown key compression.%s (known: method, rank, topk, block_size, precision, power_iters, error_feedback, lz4)", ErrConfig, key)
	}
	if err != nil && !errors.Is(err, ErrConfig) {
		err = fmt.Errorf("%w: compression.%s = %q: %v", ErrConfig, key, value, err)
	}
	return err
}
