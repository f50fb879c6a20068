package webtest

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/web"
)

// SimConfig shapes a synthetic run.
type SimConfig struct {
	Steps      int           // optimizer steps to publish; 0 means until ctx ends
	Stages     int           // pipeline stages; default 3
	Micro      int           // micro-batches per step; default 4
	StepEvery  time.Duration // wall-clock pause between steps; default 50ms
	ValEvery   int           // a val_loss every this many steps; default 10
	Seed       uint64
	TokensStep int64 // tokens per step; default 16*128
	// Async: spans name weight versions as the async schedule's do
	// (stage i's forwards and backwards run S-1-i steps stale) and the
	// timeline has stash and drop marks.
	Async bool
}

// Simulate publishes a synthetic run into s, like the runtime would: run
// info and peers first, then one step per StepEvery with a decreasing
// loss, per-stage and per-link stats, a 1F1B-like timeline of spans, and a
// few events. It returns when cfg.Steps are published or ctx ends.
func Simulate(ctx context.Context, s *web.Server, cfg SimConfig) error {
	if cfg.Stages <= 0 {
		cfg.Stages = 3
	}
	if cfg.Micro <= 0 {
		cfg.Micro = 4
	}
	if cfg.StepEvery <= 0 {
		cfg.StepEvery = 50 * time.Millisecond
	}
	if cfg.ValEvery <= 0 {
		cfg.ValEvery = 10
	}
	if cfg.TokensStep <= 0 {
		cfg.TokensStep = 16 * 128
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 7))
	s.SetRun(web.RunInfo{
		Name:       "synthetic-gpt4x256",
		Seed:       int64(cfg.Seed),
		Config:     fmt.Sprintf("[model]\nlayers = 4\nd_model = 256\nheads = 4\nctx = 128\n\n[pipeline]\nstages = %d\nmicro_batches = %d\nschedule = \"1f1b\"\n\n[compression]\ncodec = \"subspace\"\nrank = 32\n", cfg.Stages, cfg.Micro),
		TotalSteps: cfg.Steps,
		Start:      time.Now(),
	})
	peers := make([]web.Peer, cfg.Stages+1)
	cands := []string{"host", "srflx", "relay"}
	for i := range peers {
		peers[i] = web.Peer{ID: fmt.Sprintf("peer-%c", 'a'+i), Stage: i, Address: fmt.Sprintf("192.0.2.%d:%d", 10+i, 50000+i), Candidate: cands[i%3], State: web.PeerActive}
	}
	peers[cfg.Stages].Stage = -1
	peers[cfg.Stages].State = web.PeerSpare
	s.SetPeers(peers)
	s.SetStatus("training")

	// version names the weight version a forward or backward ran on.
	version := func(s metrics.Span, st int) metrics.Span {
		if cfg.Async {
			v := max(0, s.Step-1-(cfg.Stages-1-st))
			s.Of, s.Version = s.Step, &v
		}
		return s
	}
	tick := time.NewTicker(cfg.StepEvery)
	defer tick.Stop()
	wall := 0.0
	for step := 1; cfg.Steps == 0 || step <= cfg.Steps; step++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		// A loss curve shaped like a real one: from ln 256 ≈ 5.5 down
		// towards ~1.6 nats/byte, plus noise.
		x := float64(step)
		loss := 1.6 + 3.9*math.Exp(-x/60) + 0.4*math.Exp(-x/400) + 0.05*rng.NormFloat64()
		fwd, bwd, f, b := 0.004, 0.008, 0.0, 0.0
		stepDur := float64(cfg.Micro+cfg.Stages-1)*(fwd+bwd) + 0.01
		spans := make([]metrics.Span, 0, cfg.Stages*cfg.Micro*4)
		stages := make([]metrics.StageStats, cfg.Stages)
		for st := 0; st < cfg.Stages; st++ {
			t := wall + float64(st)*fwd
			busy := 0.0
			for m := 0; m < cfg.Micro; m++ {
				f = fwd * (0.9 + 0.2*rng.Float64())
				spans = append(spans, version(metrics.Span{Stage: st, Kind: "forward", Step: step, Micro: m, Start: t, End: t + f}, st))
				t += f
				busy += f
				if st < cfg.Stages-1 {
					spans = append(spans, metrics.Span{Stage: st, Kind: "send", Step: step, Micro: m, Start: t, End: t + 0.001})
					t += 0.001
				}
			}
			w := float64(cfg.Stages-1-st) * 2 * fwd
			spans = append(spans, metrics.Span{Stage: st, Kind: "recv_wait", Step: step, Start: t, End: t + w})
			t += w
			for m := 0; m < cfg.Micro; m++ {
				b = bwd * (0.9 + 0.2*rng.Float64())
				spans = append(spans, version(metrics.Span{Stage: st, Kind: "backward", Step: step, Micro: m, Start: t, End: t + b}, st))
				t += b
				busy += b
			}
			if stale := cfg.Stages - 1 - st; cfg.Async && stale > 0 {
				// The live version is stashed before the step overwrites
				// it; the oldest one goes after its last backward.
				live, old := step-1, step-1-stale
				spans = append(spans, metrics.Span{Stage: st, Kind: "stash", Step: step, Micro: -1, Of: step, Version: &live, Start: t, End: t + 0.0005})
				if old >= 0 {
					spans = append(spans, metrics.Span{Stage: st, Kind: "drop", Step: step, Micro: -1, Of: step, Version: &old, Start: t, End: t})
				}
				t += 0.0005
			}
			opt := metrics.Span{Stage: st, Kind: "optimizer", Step: step, Start: t, End: t + 0.003}
			if cfg.Async {
				v := step
				opt.Of, opt.Version = step, &v
			}
			spans = append(spans, opt)
			busy += 0.003
			idle := math.Max(0, stepDur-busy)
			stages[st] = metrics.StageStats{Stage: st, BusySeconds: busy, IdleSeconds: idle, NetWait: idle * 0.6}
		}
		wall += stepDur
		links := make([]metrics.LinkStats, cfg.Stages-1)
		for l := range links {
			links[l] = metrics.LinkStats{From: l, To: l + 1, BytesForward: int64(120000 + rng.IntN(20000)), BytesBackward: int64(110000 + rng.IntN(20000)),
				Messages: int64(2 * cfg.Micro), Ratio: 8 + 0.3*rng.Float64(), RTTMillis: 20 + 10*float64(l) + 2*rng.Float64(), Candidate: cands[(l+1)%3]}
		}
		rec := metrics.StepRecord{Step: step, Tokens: int64(step) * cfg.TokensStep, Loss: loss, LR: 3e-4,
			TokensPerSecond: float64(cfg.TokensStep) / stepDur, WallSeconds: wall, GradNorm: 1 + rng.Float64(),
			Stages: stages, Links: links}
		if step%cfg.ValEvery == 0 {
			v := loss + 0.08
			rec.ValLoss = &v
		}
		s.PublishSpans(spans)
		s.PublishStep(rec)
		if step%25 == 0 {
			s.PublishEvent(metrics.Event{Kind: "rank_change", Step: step, WallSeconds: wall, Detail: map[string]any{"link": "0->1", "rank": 32 + step/25*8}})
		}
	}
	s.SetStatus("finished")
	return nil
}
