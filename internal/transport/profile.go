package transport

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// LinkProfile describes the outgoing direction of a home-internet link for
// the shaper: a FIFO serializer at BandwidthMbps, then a one-way delay.
type LinkProfile struct {
	// BandwidthMbps is the link rate in megabits per second (10⁶ bit/s):
	// a message of n bytes occupies the link for n·8/(BandwidthMbps·10⁶)
	// seconds. 0 means unlimited.
	BandwidthMbps float64
	// LatencyMs is the one-way propagation delay in milliseconds.
	LatencyMs float64
	// JitterMs is the standard deviation, in milliseconds, of a normal
	// variation added to each message's one-way delay (the delay is never
	// below zero). Jitter never reorders: the link is one ordered, reliable
	// channel, so a message that would overtake its predecessor arrives
	// with it instead.
	JitterMs float64
	// Loss is the probability that one 1200-byte packet is lost. The link is
	// reliable, so a loss costs a retransmission: the message arrives one
	// RTT (2·LatencyMs, at least 10 ms) later per consecutive loss of the
	// same packet (at most 10, like SCTP's Path.Max.Retrans), and the resent
	// packet occupies the link again. Messages behind it wait (head-of-line
	// blocking).
	Loss float64
}

// Limits that keep every computed delay far inside time.Duration's range.
const (
	minBandwidthMbps = 0.001 // 1 kbit/s: a 64 MiB message then takes ~6 days
	maxDelayMs       = 60_000
)

// PacketSize is the packet size the loss model counts in, about what
// WebRTC data channels put in one UDP datagram.
const PacketSize = 1200

// maxRetransmits caps the consecutive losses of one packet, as SCTP's
// Path.Max.Retrans (10) does; a real stack would then declare the path
// dead, the shaper just delivers late.
const maxRetransmits = 10

// minRetransmit is the floor on the retransmission delay: real stacks do
// not retransmit faster than this even on a near-zero RTT.
const minRetransmit = 10 * time.Millisecond

// A ProfileError is a LinkProfile field outside its range. Key is the
// field as a run's TOML file spells it ("latency_ms"), so a config loader
// can name the key.
type ProfileError struct {
	Field, Key string
	Value      float64
	Allowed    string
}

func (e *ProfileError) Error() string {
	return fmt.Sprintf("transport: LinkProfile.%s = %v; want %s", e.Field, e.Value, e.Allowed)
}

// Validate reports every field outside its range, each a *ProfileError.
func (p LinkProfile) Validate() error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	var errs []error
	bad := func(field, key string, v float64, allowed string) {
		errs = append(errs, &ProfileError{Field: field, Key: key, Value: v, Allowed: allowed})
	}
	if !finite(p.BandwidthMbps) || p.BandwidthMbps < 0 || (p.BandwidthMbps > 0 && p.BandwidthMbps < minBandwidthMbps) {
		bad("BandwidthMbps", "bandwidth_mbps", p.BandwidthMbps, fmt.Sprintf("0 (unlimited) or a rate of at least %v Mbit/s", minBandwidthMbps))
	}
	if !finite(p.LatencyMs) || p.LatencyMs < 0 || p.LatencyMs > maxDelayMs {
		bad("LatencyMs", "latency_ms", p.LatencyMs, fmt.Sprintf("a one-way delay between 0 and %d ms", maxDelayMs))
	}
	if !finite(p.JitterMs) || p.JitterMs < 0 || p.JitterMs > maxDelayMs {
		bad("JitterMs", "jitter_ms", p.JitterMs, fmt.Sprintf("a standard deviation between 0 and %d ms", maxDelayMs))
	}
	if !finite(p.Loss) || p.Loss < 0 || p.Loss >= 1 {
		bad("Loss", "loss", p.Loss, "a per-packet loss probability in [0, 1) (e.g. 0.01 for 1%)")
	}
	return errors.Join(errs...)
}

// Shaped reports whether the profile changes anything.
func (p LinkProfile) Shaped() bool {
	return p.BandwidthMbps > 0 || p.LatencyMs > 0 || p.JitterMs > 0 || p.Loss > 0
}

// linkModel computes when each message arrives. It is pure: time comes in
// as arguments and randomness from a seeded generator, so its statistics
// are tested exactly, without sleeping.
type linkModel struct {
	p          LinkProfile
	rng        *rand.Rand
	linkFree   time.Time // when the serializer finishes what it holds
	lastArrive time.Time // arrival of the previous message: nothing overtakes it
}

func newLinkModel(p LinkProfile, seed uint64) *linkModel {
	return &linkModel{p: p, rng: rand.New(rand.NewPCG(seed, 0x6e62_6c69_6e6b))}
}

// msDuration converts milliseconds to a Duration.
func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// rtt is the retransmission delay of one lost packet.
func (m *linkModel) rtt() time.Duration {
	return max(2*msDuration(m.p.LatencyMs), minRetransmit)
}

// schedule returns when a message of n bytes handed to the link at now is
// delivered at the far end, and how many of its packets were resent.
func (m *linkModel) schedule(now time.Time, n int) (arrive time.Time, resent int) {
	packets := max(1, (n+PacketSize-1)/PacketSize)
	rounds := 0 // the worst packet's consecutive losses: resends run in parallel
	if m.p.Loss > 0 {
		lnLoss := math.Log(m.p.Loss)
		for range packets {
			// Consecutive losses of one packet are geometric:
			// P(k ≥ j) = Loss^j, so k = ⌊ln u / ln Loss⌋ for uniform u.
			// One draw per packet, whatever the loss rate.
			u := m.rng.Float64()
			if u >= m.p.Loss {
				continue
			}
			k := maxRetransmits
			if u > 0 {
				k = min(int(math.Log(u)/lnLoss), maxRetransmits)
			}
			resent += k
			rounds = max(rounds, k)
		}
	}
	start := now
	if m.linkFree.After(start) {
		start = m.linkFree
	}
	m.linkFree = start
	if bw := m.p.BandwidthMbps; bw > 0 {
		bits := float64(n+resent*PacketSize) * 8
		m.linkFree = start.Add(time.Duration(bits / (bw * 1e6) * float64(time.Second)))
	}
	delay := m.p.LatencyMs
	if m.p.JitterMs > 0 {
		delay = max(0, delay+m.p.JitterMs*m.rng.NormFloat64())
	}
	arrive = m.linkFree.Add(msDuration(delay) + time.Duration(rounds)*m.rtt())
	if arrive.Before(m.lastArrive) {
		arrive = m.lastArrive
	}
	m.lastArrive = arrive
	return arrive, resent
}

// pause shifts the model by d: the far end stopped taking data (its Conn
// pushed back) for that long, so the link stood still.
func (m *linkModel) pause(d time.Duration) {
	m.linkFree = m.linkFree.Add(d)
	m.lastArrive = m.lastArrive.Add(d)
}
