package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/narrowband/narrowband/scheduler"
	"github.com/narrowband/narrowband/stages"

	"github.com/narrowband/narrowband/compression"
)

func TestUnknownKeyNamesKeyAndLine(t *testing.T) {
	text := "[run]\nname = \"x\"\n\n[train]\nbatch_size = 8\nlearnin_rate = 0.1\n"
	_, err := Parse(text, "exp.toml")
	if err == nil {
		t.Fatal("unknown key accepted")
	}
	for _, want := range []string{"exp.toml:6", "train.learnin_rate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestUnknownSection(t *testing.T) {
	_, err := Parse("[modle]\nn_layer = 2\n", "x.toml")
	if err == nil || !strings.Contains(err.Error(), "modle") {
		t.Fatalf("got %v, want an error naming the unknown section", err)
	}
}

func TestMalformedTOML(t *testing.T) {
	_, err := Parse("[run]\nname = \n", "x.toml")
	if err == nil || !strings.Contains(err.Error(), "x.toml:2") {
		t.Fatalf("got %v, want an error with file and line", err)
	}
}

func TestWrongTypeNamesKey(t *testing.T) {
	_, err := Parse("[train]\nbatch_size = \"many\"\n", "x.toml")
	if err == nil || !strings.Contains(err.Error(), "batch_size") {
		t.Fatalf("got %v, want an error naming train.batch_size", err)
	}
}

func TestValidateNamesKeyValueAndAllowed(t *testing.T) {
	c := Default()
	c.Model.NHead = 3
	c.Pipeline.Schedule = scheduler.ScheduleUnknown
	c.Train.MicroBatches = 5
	c.Pipeline.RelayOnly = true
	c.Pipeline.ICEServers = []string{"stun:203.0.113.7:3478"}
	err := c.Validate()
	if err == nil {
		t.Fatal("bad config validated")
	}
	for _, want := range []string{"model.n_embd = 256", "multiple of model.n_head (3)", `pipeline.schedule = Schedule(0)`, "train.micro_batches = 5", "pipeline.relay_only = true", "needs a TURN server"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestUnknownScheduleNamesKeyAndLine: the schedule's one parser refuses a
// name no schedule has, at the line that wrote it.
func TestUnknownScheduleNamesKeyAndLine(t *testing.T) {
	_, err := Parse("[run]\nname = \"x\"\n\n[pipeline]\nschedule = \"zigzag\"\n", "exp.toml")
	if err == nil || !strings.Contains(err.Error(), "exp.toml:5") || !strings.Contains(err.Error(), "zigzag") || !strings.Contains(err.Error(), "gpipe") {
		t.Fatalf("got %v, want the line, the bad name and the known ones", err)
	}
}

func TestSetOverrides(t *testing.T) {
	c := Default()
	for _, s := range []string{"train.steps=1", "run.steps=42", "compression.method=int8", "model.bias=false", `run.name="a b"`, "pipeline.split=[1,3]", "network.bandwidth_mbps=60"} {
		if err := c.Set(s); err != nil && !strings.HasPrefix(s, "train.steps") {
			t.Fatalf("Set(%q): %v", s, err)
		}
	}
	if c.Run.Steps != 42 || c.Compression.Method != compression.MethodInt8 || c.Model.Bias || c.Run.Name != "a b" || len(c.Pipeline.Split) != 2 || c.Network.BandwidthMbps != 60 {
		t.Fatalf("overrides not applied: %+v", c)
	}
	if err := c.Set("train.steps=1"); err == nil {
		t.Error("train.steps is not a key; Set accepted it")
	}
	if err := c.Set("run.steps=lots"); err == nil || !strings.Contains(err.Error(), "run.steps") {
		t.Errorf("type mismatch: got %v", err)
	}
	if err := c.Set("nodot=1"); err == nil {
		t.Error("key without section accepted")
	}
}

func TestResolvedConfigRoundTrips(t *testing.T) {
	c := Default()
	c.Network.Links = []Link{{From: 0, To: 1}}
	bw := 30.0
	c.Network.Links[0].BandwidthMbps = &bw
	c.Pipeline.Stages = 2
	text, err := c.TOML()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(string(text), "resolved")
	if err != nil {
		t.Fatalf("resolved config does not parse back: %v\n%s", err, text)
	}
	if d.LinkProfile(0, 1).BandwidthMbps != 30 || d.Run != c.Run || d.Model != c.Model {
		t.Fatalf("round trip changed the config:\n%s", text)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSweepVariants(t *testing.T) {
	c, err := Parse("[sweep]\n\"compression.method\" = [\"none\", \"int8\", \"fp16\"]\nnetwork.bandwidth_mbps = [60, 0]\n", "s.toml")
	if err != nil {
		t.Fatal(err)
	}
	vs, err := c.Variants()
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 6 {
		t.Fatalf("%d variants, want 3×2", len(vs))
	}
	if vs[0].Name != "compression.method=none,network.bandwidth_mbps=60" || vs[0].Config.Network.BandwidthMbps != 60 {
		t.Errorf("first variant %q bw %v", vs[0].Name, vs[0].Config.Network.BandwidthMbps)
	}
	if vs[5].Config.Compression.Method != compression.MethodFP16 || vs[5].Config.Network.BandwidthMbps != 0 {
		t.Errorf("last variant %q", vs[5].Name)
	}
	bad, _ := Parse("[sweep]\n\"model.n_head\" = [3]\n", "s.toml")
	if _, err := bad.Variants(); err == nil || !strings.Contains(err.Error(), "model.n_head=3") {
		t.Errorf("invalid variant: got %v", err)
	}
	bad, _ = Parse("[sweep]\n\"model.nope\" = [3]\n", "s.toml")
	if _, err := bad.Variants(); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown sweep key: got %v", err)
	}
}

// TestSweepTooLargeIsRefused: five short lists ask for 10^5 runs; that is
// refused at once with the limit named, not expanded (the config fuzzer
// stalled on such an input).
func TestSweepTooLargeIsRefused(t *testing.T) {
	ten := "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
	c, err := Parse("[sweep]\n\"train.steps\" = "+ten+"\n\"train.warmup_steps\" = "+ten+"\n\"train.eval_batches\" = "+ten+
		"\n\"run.seed\" = "+ten+"\n\"train.eval_interval\" = "+ten+"\n", "big.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err = c.Variants(); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("more than %d variants", MaxVariants)) {
		t.Fatalf("a 10^5-variant sweep: got %v, want an error naming the limit", err)
	}
}

func TestVariantsTimesSweep(t *testing.T) {
	c, err := Parse(`
[sweep]
"network.bandwidth_mbps" = [60, 0]
[[variant]]
name = "none"
"compression.method" = "none"
[[variant]]
name = "sub16"
"compression.method" = "subspace"
"compression.rank" = "16"
"compression.precision" = "int8"
`, "v.toml")
	if err != nil {
		t.Fatal(err)
	}
	vs, err := c.Variants()
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 4 {
		t.Fatalf("%d variants, want 2×2", len(vs))
	}
	if vs[0].Name != "none,network.bandwidth_mbps=60" || vs[3].Name != "sub16,network.bandwidth_mbps=0" {
		t.Errorf("names %q … %q", vs[0].Name, vs[3].Name)
	}
	if vs[3].Config.Compression.Method != compression.MethodSubspace || vs[3].Config.Compression.Rank != 16 || vs[3].Config.Network.BandwidthMbps != 0 {
		t.Errorf("last variant: %+v", vs[3].Config.Compression)
	}
	bad, _ := Parse("[[variant]]\n\"compression.methd\" = \"none\"\n", "v.toml")
	if _, err := bad.Variants(); err == nil || !strings.Contains(err.Error(), "methd") {
		t.Errorf("unknown key in a variant: %v", err)
	}
}

// The async keys parse, round-trip, and are refused where they do not
// apply or where the async runtime cannot run them (stateful codecs), at
// the line that set them.
func TestAsyncKeys(t *testing.T) {
	const ok = "[model]\nn_layer = 4\n[pipeline]\nstages = 4\nschedule = \"async\"\nin_flight = 3\n[train]\noptimizer = \"nadamw\"\ndelay_correction = \"nesterov\"\n"
	c, err := Parse(ok, "a.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Pipeline.InFlight != 3 || c.Train.DelayCorrection != stages.DelayNesterov || c.Train.Optimizer != "nadamw" || c.Train.MomentumDecay != 0.004 {
		t.Fatalf("async keys not applied: %+v %+v", c.Pipeline, c.Train)
	}
	var b strings.Builder
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		t.Fatal(err)
	}
	if back, err := Parse(b.String(), "resolved.toml"); err != nil || back.Train.DelayCorrection != stages.DelayNesterov {
		t.Fatalf("resolved config does not round-trip: %v", err)
	}
	// Async runs recover from failures like the others (docs/faults.md):
	// spares and injected faults are accepted.
	const faulty = "[pipeline]\nstages = 2\nschedule = \"async\"\ntransport = \"webrtc\"\nspares = 1\n[[faults.event]]\nat_step = 3\nkind = \"kill\"\nstage = 1\n"
	if c, err := Parse(faulty, "f.toml"); err != nil || c.Pipeline.Spares != 1 || len(c.Faults.Events) != 1 {
		t.Fatalf("async with a spare and a fault event: %v", err)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"in_flight with 1f1b", "[pipeline]\nin_flight = 2\n", "a.toml:2: pipeline.in_flight = 2"},
		{"correction with 1f1b", "[train]\ndelay_correction = \"nesterov\"\n", "a.toml:2: train.delay_correction"},
		{"unknown correction", "[train]\ndelay_correction = \"magic\"\n", "nesterov"},
		{"unknown optimizer", "[train]\noptimizer = \"sgd\"\n", `"adamw" or "nadamw"`},
		{"stateful codec", "[pipeline]\nschedule = \"async\"\n[compression]\nmethod = \"topk\"\n", "without state across messages"},
		{"negative depth", "[pipeline]\nschedule = \"async\"\nin_flight = -1\n", "pipeline.in_flight = -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a.toml")
			if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestContributeNeedsWebRTC: web.contribute lets browser tabs join the
// run's signaling room, which only a WebRTC run has; a file that asks for
// it in another run is refused, naming the key, and a WebRTC run takes it.
func TestContributeNeedsWebRTC(t *testing.T) {
	_, err := Parse("[run]\nname = \"x\"\n\n[web]\ncontribute = true\n", "exp.toml")
	if err == nil {
		c, _ := Parse("[run]\nname = \"x\"\n\n[web]\ncontribute = true\n", "exp.toml")
		err = c.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), "web.contribute") || !strings.Contains(err.Error(), `pipeline.transport = "webrtc"`) {
		t.Fatalf("got %v, want web.contribute refused without pipeline.transport = \"webrtc\"", err)
	}
	c, err := Parse("[run]\nname = \"x\"\n\n[pipeline]\nstages = 2\ntransport = \"webrtc\"\n\n[web]\ncontribute = true\n", "exp.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || !c.Web.Contribute {
		t.Fatalf("a WebRTC run with web.contribute: %v (contribute %v)", err, c.Web.Contribute)
	}
}
