package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/narrowband/narrowband/compression"
	"github.com/narrowband/narrowband/internal/identity"
	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"
)

// Validate checks every key and returns all problems at once, each naming the
// key, the value and what is allowed.
func (c Config) Validate() error {
	var errs []error
	said := map[string]bool{}
	bad := func(key string, val any, allowed string) {
		if said[key] {
			return // the first problem of a key is the one to fix
		}
		said[key] = true
		errs = append(errs, &compression.KeyError{Key: key, Value: val, Allowed: allowed})
	}
	// Every number must be one: NaN and ±Inf pass many range checks
	// (every comparison with NaN is false), and fail later with a
	// misleading message, or none.
	floatKeys(reflect.ValueOf(c), "", func(key string, v float64) {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			bad(key, v, "must be a finite number")
		}
	})
	if c.Run.Name == "" {
		bad("run.name", `""`, "must not be empty")
	}
	if c.Run.Steps < 1 {
		bad("run.steps", c.Run.Steps, "must be at least 1")
	}
	if !(c.Data.ValFraction > 0 && c.Data.ValFraction < 0.5) {
		bad("data.val_fraction", c.Data.ValFraction, "must be in (0, 0.5)")
	}
	if c.Data.MaxBytes < 0 {
		bad("data.max_bytes", c.Data.MaxBytes, "must be at least 0 (0: half the available memory)")
	}
	m := c.Model
	if err := m.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Data.Bytes() && (m.VocabSize == 1 || m.VocabSize > 256) {
		bad("model.vocab_size", m.VocabSize, "must be in [2, 256] (byte-level vocabulary: one token per byte); a larger vocabulary needs data.tokenizer = a tokenizer.json (narrowband tokenizer train)")
	}
	if !c.Data.Bytes() && m.VocabSize > maxVocab {
		bad("model.vocab_size", m.VocabSize, fmt.Sprintf("must be at most %d", maxVocab))
	}
	for _, key := range []struct {
		name string
		pats []string
	}{{"data.include", c.Data.Include}, {"data.exclude", c.Data.Exclude}, {"data.extensions", c.Data.Extensions}} {
		for _, p := range key.pats {
			if p == "" {
				bad(key.name, key.pats, "entries must not be empty")
			}
		}
	}
	t := c.Train
	if t.BatchSize < 1 {
		bad("train.batch_size", t.BatchSize, "must be at least 1")
	}
	if t.MicroBatches < 1 {
		bad("train.micro_batches", t.MicroBatches, "must be at least 1")
	} else if t.BatchSize%t.MicroBatches != 0 {
		bad("train.micro_batches", t.MicroBatches, fmt.Sprintf("must divide train.batch_size (%d)", t.BatchSize))
	}
	if !(t.LearningRate > 0) || math.IsInf(t.LearningRate, 0) {
		bad("train.learning_rate", t.LearningRate, "must be a positive number")
	}
	if !(t.MinLR >= 0 && t.MinLR <= t.LearningRate) {
		bad("train.min_lr", t.MinLR, "must be in [0, train.learning_rate]")
	}
	if t.WarmupSteps < 0 {
		bad("train.warmup_steps", t.WarmupSteps, "must be at least 0")
	}
	if !(t.WeightDecay >= 0) {
		bad("train.weight_decay", t.WeightDecay, "must be at least 0")
	}
	if !(t.Beta1 >= 0 && t.Beta1 < 1) {
		bad("train.beta1", t.Beta1, "must be in [0, 1)")
	}
	if !(t.Beta2 >= 0 && t.Beta2 < 1) {
		bad("train.beta2", t.Beta2, "must be in [0, 1)")
	}
	if !(t.Eps > 0) || math.IsInf(t.Eps, 0) {
		bad("train.eps", t.Eps, "must be positive")
	}
	switch t.Optimizer {
	case "adamw":
	case "nadamw":
		if !(t.MomentumDecay > 0) {
			bad("train.momentum_decay", t.MomentumDecay, `must be positive with train.optimizer = "nadamw" (PyTorch's NAdam uses 0.004)`)
		}
	default:
		bad("train.optimizer", strconv.Quote(t.Optimizer), `must be "adamw" or "nadamw"`)
	}
	if !(t.GradClip >= 0) {
		bad("train.grad_clip", t.GradClip, "must be at least 0 (0 disables clipping)")
	}
	if t.EvalInterval < 0 {
		bad("train.eval_interval", t.EvalInterval, "must be at least 0")
	}
	if t.EvalBatches < 1 {
		bad("train.eval_batches", t.EvalBatches, "must be at least 1")
	}
	if t.CheckpointInterval < 0 {
		bad("train.checkpoint_interval", t.CheckpointInterval, "must be at least 0")
	}
	if !(t.CheckpointMinutes >= 0) || math.IsInf(t.CheckpointMinutes, 0) {
		bad("train.checkpoint_minutes", t.CheckpointMinutes, "must be a number of minutes, at least 0 (0: no checkpoints by time)")
	}
	if t.Threads < 0 {
		bad("train.threads", t.Threads, "must be at least 0 (0 uses every core)")
	}
	if t.LogInterval < 1 {
		bad("train.log_interval", t.LogInterval, "must be at least 1")
	}
	p := c.Pipeline
	if p.Stages < 1 || (m.NLayer >= 1 && p.Stages > m.NLayer) {
		bad("pipeline.stages", p.Stages, fmt.Sprintf("must be in [1, model.n_layer = %d]", m.NLayer))
	}
	if len(p.Split) > 0 {
		sum := 0
		for _, n := range p.Split {
			if n < 1 {
				bad("pipeline.split", p.Split, "every stage needs at least one block")
			}
			sum += n
		}
		if len(p.Split) != p.Stages {
			bad("pipeline.split", p.Split, fmt.Sprintf("must list pipeline.stages = %d block counts", p.Stages))
		} else if sum != m.NLayer {
			bad("pipeline.split", p.Split, fmt.Sprintf("block counts must add up to model.n_layer = %d", m.NLayer))
		}
	}
	if !p.Schedule.Valid() {
		bad("pipeline.schedule", p.Schedule, `must be "gpipe", "1f1b" or "async"`)
	}
	c.validateAsync(bad)
	c.validateReplicas(bad)
	switch p.Transport {
	case "inproc", "webrtc":
	default:
		bad("pipeline.transport", strconv.Quote(p.Transport), `must be "inproc" or "webrtc"`)
	}
	if p.Lookahead < 0 {
		bad("pipeline.lookahead", p.Lookahead, "must be at least 0 (0 or 1: standard 1F1B)")
	}
	if p.LocalPeers < -1 {
		bad("pipeline.local_peers", p.LocalPeers, "must be -1 (one per stage and spare) or at least 0")
	}
	if p.Spares < 0 {
		bad("pipeline.spares", p.Spares, "must be at least 0")
	}
	if c.Web.Contribute && p.Transport != "webrtc" {
		bad("web.contribute", true, fmt.Sprintf("needs pipeline.transport = \"webrtc\" (a tab joins the run's signaling room as a peer), not %q", p.Transport))
	}
	if p.RelayOnly && p.TURNAddr == "" && !slices.ContainsFunc(p.ICEServers, IsTURNURL) {
		bad("pipeline.relay_only", true, "needs a TURN server: set pipeline.turn_addr (host one beside signaling) or add a turn: URL to pipeline.ice_servers")
	}
	for i, k := range p.AllowKeys {
		if _, err := identity.Public(k).Bytes(); err != nil {
			bad(fmt.Sprintf("pipeline.allow_keys[%d]", i), strconv.Quote(k), "must be an ed25519 public key: 64 lowercase hex digits, as `narrowband peer` logs its own")
		}
	}
	n := c.Network
	// The shaper's own validator judges every profile the run will use;
	// its problems come back under the keys that set them.
	checkLink := func(prefix string, prof LinkProfile) {
		for _, e := range unjoin(prof.Validate()) {
			var pe *transport.ProfileError
			if errors.As(e, &pe) {
				bad(prefix+pe.Key, pe.Value, "must be "+pe.Allowed)
			}
		}
	}
	checkLink("network.", LinkProfile{BandwidthMbps: n.BandwidthMbps, LatencyMs: n.LatencyMs, JitterMs: n.JitterMs, Loss: n.Loss})
	for i, l := range n.Links {
		prefix := fmt.Sprintf("network.link[%d].", i)
		if l.From < 0 || l.From >= p.Stages || l.To != l.From+1 {
			bad(prefix+"from/to", fmt.Sprintf("%d→%d", l.From, l.To),
				fmt.Sprintf("must name adjacent stages i→i+1 with i in [0, %d)", p.Stages-1))
		}
		checkLink(prefix, c.LinkProfile(l.From, l.To))
	}
	cm := c.Compression
	if err := cm.Validate(); err != nil {
		errs = append(errs, err)
	}
	if cm.Method.UsesRank() && cm.Rank > 0 && m.NEmbd >= 1 && int(cm.Rank) > m.NEmbd {
		bad("compression.rank", cm.Rank, fmt.Sprintf("must be at most model.n_embd = %d", m.NEmbd))
	}
	if rc := cm.Replicas; rc.Method == compression.ReducePowerSGD && m.NEmbd >= 1 && rc.Rank > m.NEmbd {
		bad("compression.replicas.rank", rc.Rank, fmt.Sprintf("must be at most model.n_embd = %d: every weight matrix has a side of at most n_embd (or vocab_size) values, so a larger rank sends them whole", m.NEmbd))
	}
	sim := c.Simulate
	for key, v := range map[string][]float64{"simulate.forward_ms": sim.ForwardMs, "simulate.backward_ms": sim.BackwardMs, "simulate.optimizer_ms": sim.OptimizerMs} {
		if len(v) != 0 && len(v) != 1 && len(v) != p.Stages {
			bad(key, v, fmt.Sprintf("must list one value or pipeline.stages = %d values", p.Stages))
		}
		for _, x := range v {
			if x < 0 || math.IsNaN(x) || math.IsInf(x, 0) {
				bad(key, v, "values must be finite and at least 0")
				break
			}
		}
	}
	if !(sim.Speedup > 0) || math.IsInf(sim.Speedup, 0) {
		bad("simulate.speedup", sim.Speedup, "must be a positive number")
	}
	if sim.Steps < 1 || sim.Steps > 1000 {
		bad("simulate.steps", sim.Steps, "must be in [1, 1000]")
	}
	c.validateFaults(bad)
	c.validateVerify(bad)
	return errors.Join(errs...)
}

// validateAsync checks the keys of the async schedule (docs/async.md) and
// what the async runtime does not do, each refusal saying what to use
// instead.
func (c Config) validateAsync(bad func(key string, val any, allowed string)) {
	p, t := c.Pipeline, c.Train
	async := p.Schedule == scheduler.Async
	if p.InFlight < 0 {
		bad("pipeline.in_flight", p.InFlight, "must be at least 0 (0: chosen from the round trip and compute time)")
	} else if p.InFlight > 0 && !async {
		bad("pipeline.in_flight", p.InFlight, fmt.Sprintf(`only applies to pipeline.schedule = "async", not %q (1f1b has pipeline.lookahead)`, p.Schedule))
	} else if p.InFlight > 1<<20 {
		bad("pipeline.in_flight", p.InFlight, fmt.Sprintf("must be at most %d", 1<<20))
	}
	if t.DelayCorrection != stages.DelayNone && !async {
		bad("train.delay_correction", strconv.Quote(t.DelayCorrection.String()), `only applies to pipeline.schedule = "async" (the other schedules have no stale gradients): use "none"`)
	}
	if !async {
		return
	}
	if p.Lookahead > 1 {
		bad("pipeline.lookahead", p.Lookahead, `only applies to 1f1b; async has pipeline.in_flight`)
	}
	// Codecs with state across messages (error feedback, warm-started
	// factors) would see micro-batches of different weight versions
	// interleaved; the async runtime does not key their state per version.
	if c.Compression.TiedPrecision != compression.FP32 {
		bad("compression.tied_precision", strconv.Quote(c.Compression.TiedPrecision.String()), `must be "fp32" with pipeline.schedule = "async" (its tied-embedding exchange is kept per step in fp32)`)
	}
	if m := c.Compression.Method; m == compression.MethodTopK || m == compression.MethodLowRank || m == compression.MethodSubspaceTC {
		bad("compression.method", strconv.Quote(m.String()), `with pipeline.schedule = "async" must be a codec without state across messages: "none", "fp16", "bf16", "int8" or "subspace"`)
	}
}

// LinkProfile is the effective shaping of the link between stages from and to
// (to = from+1), with per-link overrides applied.
func (c Config) LinkProfile(from, to int) LinkProfile {
	p := LinkProfile{BandwidthMbps: c.Network.BandwidthMbps, LatencyMs: c.Network.LatencyMs, JitterMs: c.Network.JitterMs, Loss: c.Network.Loss}
	for _, l := range c.Network.Links {
		if l.From != from || l.To != to {
			continue
		}
		if l.BandwidthMbps != nil {
			p.BandwidthMbps = *l.BandwidthMbps
		}
		if l.LatencyMs != nil {
			p.LatencyMs = *l.LatencyMs
		}
		if l.JitterMs != nil {
			p.JitterMs = *l.JitterMs
		}
		if l.Loss != nil {
			p.Loss = *l.Loss
		}
	}
	return p
}

// LinkProfile is one link's shaping, per direction: the shaper's own type.
type LinkProfile = transport.LinkProfile

// IsTURNURL reports whether an ICE server URL names a TURN server (one that
// relays, and so needs credentials), as opposed to STUN.
func IsTURNURL(url string) bool {
	return strings.HasPrefix(url, "turn:") || strings.HasPrefix(url, "turns:")
}

// KeyError is every validation problem's type: the key as a file spells
// it, the value, and what is allowed. It is defined beside the codec's
// config, which this package embeds, so both validators speak alike.
type KeyError = compression.KeyError

// floatKeys calls f with every float key of v (a config struct) and its
// value, named as a TOML file spells it: "train.learning_rate",
// "network.link[0].latency_ms", "simulate.forward_ms[1]". The free-form
// [sweep] and [[variant]] tables are not walked (their values are
// validated in the variants they make).
func floatKeys(v reflect.Value, prefix string, f func(key string, v float64)) {
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		f(prefix, v.Float())
	case reflect.Pointer:
		if !v.IsNil() {
			floatKeys(v.Elem(), prefix, f)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			floatKeys(v.Index(i), fmt.Sprintf("%s[%d]", prefix, i), f)
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
			if name == "" || name == "-" || name == "sweep" || name == "variant" || !t.Field(i).IsExported() {
				continue
			}
			key := name
			if prefix != "" {
				key = prefix + "." + name
			}
			floatKeys(v.Field(i), key, f)
		}
	}
}
