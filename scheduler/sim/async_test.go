package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/scheduler"
)

// homeQuickstart is the setting (#17): the quickstart model (d=256,
// 4 blocks, 16×128 tokens a step in 4 micro-batches) cut into 4 stages
// with the subspace k=48 int4 codec over 60 Mbps links. Compute and
// message sizes are what `narrowband simulate` measured for that config on
// this project's 2-core machine (quickstart.toml with pipeline.stages = 4,
// compression.method = "subspace", rank = 48, precision = "int4").
func homeQuickstart(kind scheduler.Schedule, latency float64, steps int) Config {
	const act, emb = 13356, 49194
	link := Link{ForwardBPS: 60e6, BackwardBPS: 60e6, Latency: latency, ActivationBytes: act, GradientBytes: act}
	return Config{Schedule: kind, Stages: 4, Micro: 4, Steps: steps,
		Compute: []Compute{
			{Forward: 0.01026, Backward: 0.02172, Optimizer: 0.00742},
			{Forward: 0.01163, Backward: 0.02040, Optimizer: 0.00575},
			{Forward: 0.01598, Backward: 0.02594, Optimizer: 0.00434},
			{Forward: 0.01246, Backward: 0.02119, Optimizer: 0.00253},
		},
		Links:         []Link{link},
		Embedding:     Embedding{BPS: 60e6, Latency: latency, Bytes: emb},
		TokensPerStep: 16 * 128,
	}
}

func bubble(r Result) float64 {
	var busy float64
	for _, s := range r.Stages {
		busy += s.Busy
	}
	return 1 - busy/float64(len(r.Stages))
}

// Home latency costs the async schedule almost nothing: at 50 ms one way it
// keeps ≥ 0.9× of its own 0 ms tokens/s, where 1F1B (with the runtime's
// optimizer barrier, as `narrowband simulate` predicts it) does not.
func TestAsyncHidesLatency(t *testing.T) {
	const steps = 24
	type row struct {
		sync, async Result
		d           int
	}
	rows := map[float64]row{}
	for _, lat := range []float64{0, 0.025, 0.050} {
		c := homeQuickstart(scheduler.OneFOneB, lat, steps)
		c.Barrier = true
		s, err := Run(c)
		if err != nil {
			t.Fatal(err)
		}
		c = homeQuickstart(scheduler.Async, lat, steps)
		c.InFlight = InFlightFor(c)
		c.Spans = true
		a, err := Run(c)
		if err != nil {
			t.Fatal(err)
		}
		// The last stage's lag (scheduler.AsyncMachine.Lag) is meant to
		// hide the tied-embedding exchange: its gradient was sent before
		// the activation that lets the last stage reach its optimizer
		// step, so in the steady state nobody waits for it.
		for _, sp := range a.Spans {
			if sp.Kind == SpanNetWait && sp.Micro == -1 && sp.Step >= steps/4 && sp.Step < steps-steps/4 {
				t.Errorf("%v ms: stage %d waits %.2f ms for step %d's embedding gradient", 1e3*lat, sp.Stage, 1e3*(sp.End-sp.Start), sp.Step)
			}
		}
		rows[lat] = row{s, a, c.InFlight}
		t.Logf("S=4 M=4 60 Mbps %2.0f ms one way: 1f1b %5.0f tok/s (bubble %2.0f%%)  async in_flight %d %5.0f tok/s (bubble %2.0f%%)  async/1f1b %.2f×",
			1e3*lat, s.TokensPerSecond, 100*bubble(s), c.InFlight, a.TokensPerSecond, 100*bubble(a), a.TokensPerSecond/s.TokensPerSecond)
		// What the depth costs in memory, per stage: activation slots,
		// weight copies (live + stashed), gradient buffers.
		var mem []string
		for st := range c.Stages {
			m, _ := scheduler.NewAsyncMachine(c.pipeline(), st, steps)
			mem = append(mem, fmt.Sprintf("stage %d: %d act, %d weights, %d grads", st, m.MaxInFlight(), 1+m.StashBound(), m.GradBuffers()))
		}
		t.Logf("    async memory in_flight %d: %s", c.InFlight, strings.Join(mem, "; "))
		// The best the flushing schedules do: 1F1B with the lookahead that
		// hides the round trip (no barrier), and async too shallow.
		l := homeQuickstart(scheduler.OneFOneB, lat, steps)
		l.Lookahead = scheduler.LookaheadFor(2*lat+float64(2*l.Links[0].ActivationBytes)*8/60e6, 0.01026, 0.02172)
		best, err := Run(l)
		if err != nil {
			t.Fatal(err)
		}
		c.InFlight = 1
		shallow, err := Run(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("    1f1b lookahead %d without barrier %5.0f tok/s (async/that %.2f×); async in_flight 1 %5.0f tok/s",
			l.Lookahead, best.TokensPerSecond, a.TokensPerSecond/best.TokensPerSecond, shallow.TokensPerSecond)
	}
	z, h := rows[0], rows[0.050]
	syncKeep, asyncKeep := h.sync.TokensPerSecond/z.sync.TokensPerSecond, h.async.TokensPerSecond/z.async.TokensPerSecond
	t.Logf("50 ms vs 0 ms: 1f1b keeps %.2f×, async keeps %.2f×", syncKeep, asyncKeep)
	if asyncKeep < 0.9 {
		t.Errorf("async at 50 ms keeps %.2f× of its 0 ms tokens/s, want ≥ 0.9×", asyncKeep)
	}
	if syncKeep >= 0.9 {
		t.Errorf("1f1b at 50 ms keeps %.2f× of its 0 ms tokens/s: the comparison shows nothing", syncKeep)
	}
}

// With equal stages the async steady state has no bubble at all, whatever
// the latency, once the in-flight depth covers the round trip: each step
// takes exactly one stage's work, M(tf+tb)+opt, where GPipe and 1F1B take
// (M+S-1)(tf+tb)+opt plus latency. Too shallow a pipe pays the round trip.
func TestAsyncIdealStepTime(t *testing.T) {
	const tf, tb, opt = 0.25, 0.5, 0.125
	for _, sm := range [][2]int{{1, 1}, {2, 4}, {4, 8}, {4, 2}, {8, 3}} {
		S, M := sm[0], sm[1]
		for _, lat := range []float64{0, 0.3, 2} {
			l := Unlimited
			l.Latency = lat
			c := Config{Schedule: scheduler.Async, Stages: S, Micro: M, Steps: 120,
				InFlight: scheduler.InFlightFor(2*lat, tf, tb, opt),
				Compute:  []Compute{{tf, tb, opt}}, Links: []Link{l},
				Embedding: Embedding{BPS: math.Inf(1), Latency: lat}, TokensPerStep: 1000}
			r, err := Run(c)
			if err != nil {
				t.Fatalf("S=%d M=%d latency %v: %v", S, M, lat, err)
			}
			if want := float64(M)*(tf+tb) + opt; !near(r.StepTime, want) {
				t.Errorf("S=%d M=%d latency %v in_flight %d: step %v, want one stage's work %v", S, M, lat, c.InFlight, r.StepTime, want)
			}
			if lat > 0 && S > 1 {
				d := c.InFlight
				c.InFlight = 1
				shallow, err := Run(c)
				if err != nil {
					t.Fatal(err)
				}
				if shallow.StepTime <= r.StepTime*1.05 {
					t.Errorf("S=%d M=%d latency %v: in_flight 1 step %v, want clearly slower than in_flight %d's %v",
						S, M, lat, shallow.StepTime, d, r.StepTime)
				}
			}
		}
	}
}

// Seeded random configs under the async schedule: the run finishes, is
// deterministic, every micro-batch gets one forward then one backward per
// stage, spans never overlap, and fractions add up.
func TestAsyncRandomProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 200 {
		c := randomConfig(rng)
		c.Schedule, c.Lookahead, c.InFlight = scheduler.Async, 0, rng.IntN(5)
		r, err := Run(c)
		if err != nil {
			t.Fatalf("config %d %+v: %v", i, c, err)
		}
		r2, _ := Run(c)
		if r2.StepTime != r.StepTime || len(r2.Spans) != len(r.Spans) {
			t.Fatalf("config %d: not deterministic", i)
		}
		for s, st := range r.Stages {
			if sum := st.Busy + st.NetWait + st.Bubble; st.Bubble < 0 || !near(sum, 1) {
				t.Errorf("config %d stage %d: busy %v + net %v + bubble %v = %v", i, s, st.Busy, st.NetWait, st.Bubble, sum)
			}
		}
		checkSpans(t, c, r.Spans)
	}
	c := randomConfig(rng)
	c.Schedule, c.Lookahead, c.Barrier = scheduler.Async, 0, true
	if err := c.Validate(); err == nil {
		t.Error("Barrier with async: Validate = nil, want an error")
	}
}
