package config

import (
	"strings"
	"testing"
)

func TestFaultEventsParseAndValidate(t *testing.T) {
	c, err := Parse(`
[run]
steps = 40
[pipeline]
stages = 4
transport = "webrtc"
spares = 1
[faults]
peer_timeout = 3
[[faults.event]]
at_step = 12
kind = "kill"
stage = 2
[[faults.event]]
at_step = 20
kind = "cut"
stage = 1
duration = 10
`, "scenario.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Faults.Events) != 2 || c.Faults.Events[0].Kind != "kill" || c.Faults.Events[1].Duration != 10 {
		t.Fatalf("events = %+v", c.Faults.Events)
	}
	if hb := c.Faults.HeartbeatSeconds(); hb != 3.0/8 {
		t.Errorf("heartbeat = %v, want peer_timeout/8", hb)
	}
	if lt := c.Faults.LinkTimeoutSeconds(); lt != 1.5 {
		t.Errorf("link timeout = %v, want peer_timeout/2", lt)
	}

	bad := c
	bad.Pipeline.Transport = "inproc"
	bad.Faults.Events = []FaultEvent{{AtStep: 0, Kind: "kill", Stage: 9}, {AtStep: 3, Kind: "cut", Stage: 3}, {AtStep: 3, Kind: "melt"}}
	err = bad.Validate()
	for _, want := range []string{"faults.event[0].at_step", "faults.event[0].stage", `faults.event[0].kind = "kill": needs pipeline.transport = "webrtc"`, "faults.event[1].stage = 3", "faults.event[1].duration", `faults.event[2].kind = "melt"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}
