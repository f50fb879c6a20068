package transport

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestLinkProfileValidate(t *testing.T) {
	good := []LinkProfile{{}, {BandwidthMbps: 60, LatencyMs: 25, JitterMs: 5, Loss: 0.01}, {BandwidthMbps: 0.001}, {Loss: 0.999}}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	bad := []struct {
		p     LinkProfile
		field string
	}{
		{LinkProfile{BandwidthMbps: -1}, "BandwidthMbps = -1"},
		{LinkProfile{BandwidthMbps: 1e-6}, "BandwidthMbps = 1e-06"},
		{LinkProfile{BandwidthMbps: math.NaN()}, "BandwidthMbps = NaN"},
		{LinkProfile{LatencyMs: -5}, "LatencyMs = -5"},
		{LinkProfile{LatencyMs: math.Inf(1)}, "LatencyMs = +Inf"},
		{LinkProfile{JitterMs: 1e9}, "JitterMs = 1e+09"},
		{LinkProfile{Loss: 1}, "Loss = 1"},
		{LinkProfile{Loss: math.NaN()}, "Loss = NaN"},
		{LinkProfile{Loss: -0.1}, "Loss = -0.1"},
	}
	for _, c := range bad {
		err := c.p.Validate()
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: got %v, want an error naming %q", c.p, err, c.field)
		}
	}
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// The serializer plus latency, exactly: 4 MiB in 64 KiB messages handed
// over at once arrive over N·8/bw + latency.
func TestModelBandwidthAndLatency(t *testing.T) {
	m := newLinkModel(LinkProfile{BandwidthMbps: 60, LatencyMs: 25}, 1)
	const msg, n = 64 << 10, 64
	var last time.Time
	for i := range n {
		arrive, _ := m.schedule(t0, msg)
		want := t0.Add(time.Duration(float64((i+1)*msg*8)/60e6*float64(time.Second)) + 25*time.Millisecond)
		if d := arrive.Sub(want); d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("message %d arrives at +%v, want +%v", i, arrive.Sub(t0), want.Sub(t0))
		}
		last = arrive
	}
	t.Logf("4 MiB over 60 Mbit/s, 25 ms: last byte at +%v", last.Sub(t0))

	// An idle link does not bank credit: a message sent later starts then.
	later := t0.Add(time.Hour)
	arrive, _ := m.schedule(later, 1200)
	if want := later.Add(160*time.Microsecond + 25*time.Millisecond); arrive.Sub(want).Abs() > time.Microsecond {
		t.Errorf("after an idle hour a 1200-byte message arrives at +%v, want +%v", arrive.Sub(later), want.Sub(later))
	}
}

func TestModelJitterStatisticsAndOrder(t *testing.T) {
	const latency, jitter, n = 25.0, 5.0, 20000
	m := newLinkModel(LinkProfile{LatencyMs: latency, JitterMs: jitter}, 42)
	var sum, sum2 float64
	for i := range n {
		// Spaced one second apart: no message waits for its predecessor.
		now := t0.Add(time.Duration(i) * time.Second)
		arrive, _ := m.schedule(now, 100)
		d := float64(arrive.Sub(now)) / float64(time.Millisecond)
		sum += d
		sum2 += d * d
	}
	mean := sum / n
	sd := math.Sqrt(sum2/n - mean*mean)
	if math.Abs(mean-latency) > 0.2 || math.Abs(sd-jitter) > 0.2 {
		t.Errorf("one-way delay: mean %.2f ms, sd %.2f ms; want %.0f ± 0.2 and %.0f ± 0.2", mean, sd, latency, jitter)
	}

	// Back to back, jitter must not reorder.
	m = newLinkModel(LinkProfile{BandwidthMbps: 1000, LatencyMs: 5, JitterMs: 20}, 7)
	var prev time.Time
	for i := range 10000 {
		arrive, _ := m.schedule(t0.Add(time.Duration(i)*time.Microsecond), 1000)
		if arrive.Before(prev) {
			t.Fatalf("message %d arrives %v before message %d: jitter reordered the channel", i, prev.Sub(arrive), i-1)
		}
		prev = arrive
	}
}

func TestModelLoss(t *testing.T) {
	const loss, n = 0.02, 50000
	p := LinkProfile{LatencyMs: 25, Loss: loss}
	m := newLinkModel(p, 3)
	rtt := 50 * time.Millisecond
	delayed := 0
	for i := range n {
		now := t0.Add(time.Duration(i) * time.Second)
		arrive, resent := m.schedule(now, 1000) // one packet each
		extra := arrive.Sub(now) - 25*time.Millisecond
		if extra != time.Duration(resent)*rtt {
			t.Fatalf("message %d: %d resends but %v extra delay; want one RTT (%v) per consecutive loss", i, resent, extra, rtt)
		}
		if resent > 0 {
			delayed++
		}
	}
	// Binomial(50000, 0.02): sd ≈ 31, so ±5 sd is 155.
	if got := float64(delayed); math.Abs(got-loss*n) > 155 {
		t.Errorf("%d of %d one-packet messages delayed by loss; want %.0f ± 155", delayed, n, loss*n)
	}

	// A 64 KiB message is 55 packets: P(at least one lost) = 1-0.98^55 ≈ 0.67.
	m = newLinkModel(p, 4)
	delayed = 0
	for i := range 10000 {
		if _, resent := m.schedule(t0.Add(time.Duration(i)*time.Second), 64<<10); resent > 0 {
			delayed++
		}
	}
	if want := 1 - math.Pow(1-loss, 55); math.Abs(float64(delayed)/10000-want) > 0.025 {
		t.Errorf("%.3f of 64 KiB messages hit a loss, want %.3f", float64(delayed)/10000, want)
	}

	// Short RTTs are floored: a retransmission takes at least 10 ms.
	m = newLinkModel(LinkProfile{LatencyMs: 1, Loss: 0.5}, 5)
	for i := range 100 {
		now := t0.Add(time.Duration(i) * time.Second)
		arrive, resent := m.schedule(now, 10)
		if want := time.Millisecond + time.Duration(resent)*minRetransmit; arrive.Sub(now) != want {
			t.Fatalf("1 ms link, %d resends: delay %v, want %v", resent, arrive.Sub(now), want)
		}
	}
}

func TestModelHeadOfLine(t *testing.T) {
	// With loss, a delayed message holds back the ones behind it, and the
	// resent bytes occupy the link.
	m := newLinkModel(LinkProfile{BandwidthMbps: 100, LatencyMs: 10, Loss: 0.3}, 9)
	var prev time.Time
	held := 0
	for i := range 1000 {
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond)
		arrive, resent := m.schedule(now, 1200)
		if arrive.Before(prev) {
			t.Fatalf("message %d overtook its predecessor", i)
		}
		if resent == 0 && arrive.Equal(prev) {
			held++
		}
		prev = arrive
	}
	if held == 0 {
		t.Errorf("no lossless message was held behind a retransmission at 30%% loss")
	}
}

func TestModelSeeded(t *testing.T) {
	p := LinkProfile{BandwidthMbps: 60, LatencyMs: 25, JitterMs: 5, Loss: 0.05}
	run := func(seed uint64) []time.Time {
		m := newLinkModel(p, seed)
		var out []time.Time
		for i := range 200 {
			a, _ := m.schedule(t0.Add(time.Duration(i)*time.Millisecond), 5000)
			out = append(out, a)
		}
		return out
	}
	a, b, c := run(1), run(1), run(2)
	same := func(x, y []time.Time) bool {
		for i := range x {
			if !x[i].Equal(y[i]) {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Errorf("same seed gave different schedules")
	}
	if same(a, c) {
		t.Errorf("seeds 1 and 2 gave identical schedules; the seed is ignored")
	}
}

// Consecutive losses of one packet follow P(k ≥ j) = Loss^j, capped at
// maxRetransmits; even a near-total loss rate costs one draw per packet.
func TestModelLossDistribution(t *testing.T) {
	const loss, n = 0.5, 100000
	m := newLinkModel(LinkProfile{LatencyMs: 5, Loss: loss}, 8)
	counts := make([]int, maxRetransmits+1)
	for i := range n {
		_, k := m.schedule(t0.Add(time.Duration(i)*time.Second), 10)
		counts[k]++
	}
	for j := range 5 {
		atLeast := 0
		for _, c := range counts[j:] {
			atLeast += c
		}
		want := math.Pow(loss, float64(j))
		if got := float64(atLeast) / n; math.Abs(got-want) > 0.01 {
			t.Errorf("P(≥%d resends) = %.4f, want %.4f", j, got, want)
		}
	}

	m = newLinkModel(LinkProfile{BandwidthMbps: 1000, LatencyMs: 5, Loss: 0.999999}, 9)
	arrive, resent := m.schedule(t0, 16<<20)
	packets := (16<<20 + PacketSize - 1) / PacketSize
	if resent != packets*maxRetransmits {
		t.Errorf("at Loss≈1 a %d-packet message was resent %d times, want the cap %d", packets, resent, packets*maxRetransmits)
	}
	if d := arrive.Sub(t0); d <= 0 || d > time.Hour {
		t.Errorf("at Loss≈1 a 16 MiB message arrives after %v; want finite and positive", d)
	}
}
