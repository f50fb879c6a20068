package sim

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/narrowband/narrowband/scheduler"
)

var schedules = []scheduler.Schedule{scheduler.GPipe, scheduler.OneFOneB}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// With zero latency, unlimited bandwidth and equal compute per stage, both
// schedules take (M+S-1)(tf+tb) + optimizer per step, first and steady.
func TestIdealStepTime(t *testing.T) {
	const tf, tb, opt = 0.25, 0.5, 0.125
	for _, kind := range schedules {
		for _, sm := range [][2]int{{1, 1}, {1, 5}, {2, 4}, {4, 8}, {4, 2}, {8, 3}, {5, 16}} {
			S, M := sm[0], sm[1]
			c := Config{Schedule: kind, Stages: S, Micro: M, Steps: 3,
				Compute: []Compute{{tf, tb, opt}}, Links: []Link{Unlimited},
				Embedding: Embedding{BPS: math.Inf(1), Bytes: 1 << 20}, TokensPerStep: 1000}
			r, err := Run(c)
			if err != nil {
				t.Fatalf("%v S=%d M=%d: %v", kind, S, M, err)
			}
			want := float64(M+S-1)*(tf+tb) + opt
			if !near(r.StepTime, want) || !near(r.FirstStepTime, want) {
				t.Errorf("%v S=%d M=%d: step time %v (first %v), want %v", kind, S, M, r.StepTime, r.FirstStepTime, want)
			}
			if !near(r.TokensPerSecond, 1000/want) {
				t.Errorf("%v S=%d M=%d: tokens/s %v, want %v", kind, S, M, r.TokensPerSecond, 1000/want)
			}
			// The bubble is (S-1)(tf+tb)+opt... per stage all the same busy time.
			for _, st := range r.Stages {
				if wantBusy := (float64(M)*(tf+tb) + opt) / want; !near(st.Busy, wantBusy) || st.NetWait != 0 {
					t.Errorf("%v S=%d M=%d stage %d: busy %v net %v, want busy %v net 0", kind, S, M, st.Stage, st.Busy, st.NetWait, wantBusy)
				}
			}
		}
	}
}

// A bandwidth-bound link sets the pace: a step takes at least the bytes
// crossing it over its bandwidth, and the receiving stage reports the wait
// as network time, not bubble.
func TestBandwidthBound(t *testing.T) {
	for _, kind := range schedules {
		const S, M, bytes, bps = 4, 8, 1 << 20, 8e6 // 1 MiB at 1 MB/s ≈ 1.05 s per message
		links := []Link{Unlimited, Unlimited, Unlimited}
		links[1] = Link{ForwardBPS: bps, BackwardBPS: math.Inf(1), ActivationBytes: bytes}
		c := Config{Schedule: kind, Stages: S, Micro: M, Steps: 3,
			Compute: []Compute{{0.01, 0.02, 0.01}}, Links: links, Embedding: Embedding{BPS: math.Inf(1)}}
		r, err := Run(c)
		if err != nil {
			t.Fatal(err)
		}
		floor := float64(M) * bytes * 8 / bps
		if r.StepTime < floor {
			t.Errorf("%v: step time %v below the link floor %v", kind, r.StepTime, floor)
		}
		if r.StepTime > 1.2*floor {
			t.Errorf("%v: step time %v, want close to the link floor %v (compute is tiny)", kind, r.StepTime, floor)
		}
		if r.Links[1].ForwardBytes != M*bytes || r.Links[1].ForwardMessages != M {
			t.Errorf("%v: link 1 carried %d bytes in %d messages per step, want %d in %d", kind, r.Links[1].ForwardBytes, r.Links[1].ForwardMessages, M*bytes, M)
		}
		if st := r.Stages[2]; st.NetWait < 0.5 {
			t.Errorf("%v: stage 2 behind the slow link: net wait %.3f busy %.3f bubble %.3f, want mostly net wait", kind, st.NetWait, st.Busy, st.Bubble)
		}
	}
}

// Latency on unlimited links. GPipe pays it only while filling and draining:
// exactly 2(S-1) one-way trips per step on top of the ideal. 1F1B pays it
// per micro-batch: on the last stage, F(j+1) needs stage S-2 to receive
// the gradient of j-1, run B(j-1) and F(j+1) and send back, so two
// micro-batches take at least 2(tf+tb) + 2·latency there. On home links
// (tens of ms) this makes strict 1F1B much slower than GPipe.
func TestLatency(t *testing.T) {
	const tf, tb, opt = 1.0, 2.0, 0.5
	for _, S := range []int{2, 4, 6} {
		for _, M := range []int{1, 4, 16, 33} {
			for _, lat := range []float64{0.25, 1, 5} {
				l := Unlimited
				l.Latency = lat
				c := Config{Stages: S, Micro: M, Steps: 3, Compute: []Compute{{tf, tb, opt}}, Links: []Link{l},
					Embedding: Embedding{BPS: math.Inf(1), Latency: lat}}
				c.Schedule = scheduler.GPipe
				g, err := Run(c)
				if err != nil {
					t.Fatal(err)
				}
				ideal := float64(M+S-1)*(tf+tb) + opt
				if want := ideal + 2*float64(S-1)*lat; !near(g.StepTime, want) {
					t.Errorf("gpipe S=%d M=%d latency %v: step %v, want %v", S, M, lat, g.StepTime, want)
				}
				c.Schedule = scheduler.OneFOneB
				f, err := Run(c)
				if err != nil {
					t.Fatal(err)
				}
				if floor := float64((M-1)/2) * 2 * (tf + tb + lat); f.StepTime < floor-1e-9 || f.StepTime < g.StepTime-1e-9 {
					t.Errorf("1f1b S=%d M=%d latency %v: step %v, want ≥ %v and ≥ gpipe's %v", S, M, lat, f.StepTime, floor, g.StepTime)
				}
				// Enough lookahead hides the round trip: as fast as GPipe,
				// holding fewer activations whenever it is below M.
				c.Lookahead = scheduler.LookaheadFor(2*lat, tf, tb)
				h, err := Run(c)
				if err != nil {
					t.Fatal(err)
				}
				if !near(h.StepTime, g.StepTime) {
					t.Errorf("1f1b lookahead %d S=%d M=%d latency %v: step %v, want gpipe's %v", c.Lookahead, S, M, lat, h.StepTime, g.StepTime)
				}
			}
		}
	}
}

// randomConfig draws a config from seeded randomness.
func randomConfig(rng *rand.Rand) Config {
	S := 1 + rng.IntN(8)
	M := 1 + rng.IntN(12)
	c := Config{Schedule: schedules[rng.IntN(2)], Stages: S, Micro: M, Steps: 1 + rng.IntN(3), Spans: true, TokensPerStep: 4096}
	if c.Schedule == scheduler.OneFOneB {
		c.Lookahead = rng.IntN(5)
	}
	for range S {
		c.Compute = append(c.Compute, Compute{rng.Float64(), rng.Float64() * 2, rng.Float64() * 0.1})
	}
	for range max(S-1, 1) {
		bw := func() float64 {
			if rng.IntN(4) == 0 {
				return math.Inf(1)
			}
			return 1e5 + rng.Float64()*1e8
		}
		c.Links = append(c.Links, Link{ForwardBPS: bw(), BackwardBPS: bw(), Latency: rng.Float64() * 0.05,
			ActivationBytes: rng.Int64N(1 << 20), GradientBytes: rng.Int64N(1 << 20)})
	}
	c.Embedding = Embedding{BPS: 1e6 + rng.Float64()*1e8, Latency: rng.Float64() * 0.05, Bytes: rng.Int64N(1 << 22)}
	return c
}

// Property checks over seeded random configs: the run finishes; spans on a
// stage never overlap; every micro-batch gets one forward then one backward
// per stage per step; a step is never faster than any stage's compute or
// any link's serialization; fractions add up; the run is deterministic.
func TestRandomProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		c := randomConfig(rng)
		r, err := Run(c)
		if err != nil {
			t.Fatalf("config %d %+v: %v", i, c, err)
		}
		r2, _ := Run(c)
		if r2.StepTime != r.StepTime || len(r2.Spans) != len(r.Spans) {
			t.Fatalf("config %d: not deterministic", i)
		}
		for s := range c.Stages {
			p := c.compute(s)
			work := float64(c.Micro)*(p.Forward+p.Backward) + p.Optimizer
			if r.StepTime < work-1e-9 {
				t.Errorf("config %d: step time %v below stage %d's compute %v", i, r.StepTime, s, work)
			}
			st := r.Stages[s]
			if sum := st.Busy + st.NetWait + st.Bubble; st.Bubble < 0 || !near(sum, 1) {
				t.Errorf("config %d stage %d: busy %v + net %v + bubble %v = %v", i, s, st.Busy, st.NetWait, st.Bubble, sum)
			}
		}
		for b := 0; b < c.Stages-1; b++ {
			l := c.link(b)
			for _, dir := range []struct{ bytes, bps float64 }{
				{float64(l.ActivationBytes), l.ForwardBPS}, {float64(l.GradientBytes), l.BackwardBPS}} {
				// Per step the link must move M messages; in the steady
				// state they cannot overlap steps by more than one step's
				// worth, so over K steps the makespan covers K·M messages.
				floor := float64(c.Steps*c.Micro) * dir.bytes * 8 / dir.bps
				if r.StepEnds[c.Steps-1] < floor-1e-9 {
					t.Errorf("config %d link %d: makespan %v below serialization %v", i, b, r.StepEnds[c.Steps-1], floor)
				}
			}
		}
		checkSpans(t, c, r.Spans)
	}
}

func checkSpans(t *testing.T, c Config, spans []Span) {
	t.Helper()
	type key struct{ stage, step, micro int }
	fwd := map[key]float64{}
	bwd := map[key]bool{}
	lastEnd := make([]float64, c.Stages)
	for i := range lastEnd {
		lastEnd[i] = -1
	}
	for _, sp := range spans {
		if sp.Kind == SpanNetWait {
			continue
		}
		if sp.Start < lastEnd[sp.Stage]-1e-12 || sp.End < sp.Start {
			t.Fatalf("stage %d: span %+v overlaps the previous one ending at %v", sp.Stage, sp, lastEnd[sp.Stage])
		}
		lastEnd[sp.Stage] = sp.End
		k := key{sp.Stage, sp.Step, sp.Micro}
		switch sp.Kind {
		case SpanForward:
			if _, dup := fwd[k]; dup {
				t.Fatalf("two forwards of %+v", k)
			}
			fwd[k] = sp.End
		case SpanBackward:
			if _, ok := fwd[k]; !ok || bwd[k] {
				t.Fatalf("backward of %+v without a forward before it, or twice", k)
			}
			bwd[k] = true
		}
	}
	if n := c.Stages * c.Steps * c.Micro; len(fwd) != n || len(bwd) != n {
		t.Fatalf("%d forwards and %d backwards, want %d each", len(fwd), len(bwd), n)
	}
}

// S=32, M=64 must be instant so sweeps can call Run in a loop.
func TestLargeIsFast(t *testing.T) {
	for _, kind := range schedules {
		c := Config{Schedule: kind, Stages: 32, Micro: 64, Steps: 3, Compute: []Compute{{0.01, 0.02, 0.05}},
			Links:     []Link{{ForwardBPS: 80e6, BackwardBPS: 80e6, Latency: 0.03, ActivationBytes: 100_000, GradientBytes: 100_000}},
			Embedding: Embedding{BPS: 80e6, Latency: 0.05, Bytes: 1 << 20}, Spans: true}
		// Best of a few runs: the machine is shared, and what we care
		// about is the simulator's own cost.
		best := time.Duration(math.MaxInt64)
		var r Result
		for range 5 {
			start := time.Now()
			var err error
			if r, err = Run(c); err != nil {
				t.Fatal(err)
			}
			best = min(best, time.Since(start))
		}
		if best > 100*time.Millisecond && !raceEnabled {
			t.Errorf("%v S=32 M=64: %v, want < 100ms", kind, best)
		}
		if r.StepTime <= 0 {
			t.Errorf("%v: step time %v", kind, r.StepTime)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Config{Schedule: scheduler.GPipe, Stages: 3, Micro: 2, Steps: 1, Compute: []Compute{{1, 1, 1}}, Links: []Link{Unlimited},
		Embedding: Embedding{BPS: math.Inf(1)}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"unknown schedule":  func(c *Config) { c.Schedule = 0 },
		"gpipe lookahead":   func(c *Config) { c.Lookahead = 3 },
		"zero stages":       func(c *Config) { c.Stages = 0 },
		"zero steps":        func(c *Config) { c.Steps = 0 },
		"compute count":     func(c *Config) { c.Compute = []Compute{{}, {}} },
		"negative compute":  func(c *Config) { c.Compute = []Compute{{-1, 1, 1}} },
		"nan compute":       func(c *Config) { c.Compute = []Compute{{math.NaN(), 1, 1}} },
		"zero bandwidth":    func(c *Config) { c.Links = []Link{{ForwardBPS: 0, BackwardBPS: 1}} },
		"nan latency":       func(c *Config) { c.Links = []Link{{ForwardBPS: 1, BackwardBPS: 1, Latency: math.NaN()}} },
		"negative bytes":    func(c *Config) { c.Links = []Link{{ForwardBPS: 1, BackwardBPS: 1, ActivationBytes: -1}} },
		"no links":          func(c *Config) { c.Links = nil },
		"embedding no rate": func(c *Config) { c.Embedding = Embedding{} },
		"huge":              func(c *Config) { c.Stages, c.Micro, c.Steps = 1<<20, 1<<20, 1<<20 },
	} {
		c := good
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: Validate = %v, want ErrBadConfig", name, err)
		}
		if _, err := Run(c); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: Run = %v, want ErrBadConfig", name, err)
		}
	}
}
