package pipeline

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
)

// linkFaults is the injected state of one link, kept by the stage that
// owns the fault (the sender side of stage→stage+1). It outlives the
// connections that carry the link: a link re-established during a cut is
// still cut, as a dead Wi-Fi would be.
type linkFaults struct {
	mu           sync.Mutex
	cutUntil     time.Time
	corruptUntil time.Time
	corruptLeft  int // tensor frames still to corrupt, whatever the time
	slowUntil    time.Time
	slowBps      float64
	dupUntil     time.Time // tests: every tensor frame sent twice
	rng          *rand.Rand
}

func newLinkFaults(seed uint64) *linkFaults {
	return &linkFaults{rng: rand.New(rand.NewPCG(seed, 0xfa17))}
}

// apply starts a fault of kind for d (and, for corrupt, for the next
// frames tensor frames).
func (f *linkFaults) apply(kind string, d time.Duration, mbps float64, frames int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	until := time.Now().Add(d)
	switch kind {
	case "cut":
		f.cutUntil = until
	case "corrupt":
		f.corruptUntil = until
		f.corruptLeft = frames
	case "duplicate":
		f.dupUntil = until
	case "slow":
		if mbps <= 0 {
			mbps = 1
		}
		f.slowUntil, f.slowBps = until, mbps*1e6/8
	}
}

func (f *linkFaults) cut() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Before(f.cutUntil)
}

// faultConn carries a link through its injected faults: a cut drops every
// message both ways (as a link that lost its route would, but without the
// transport's retransmissions: what is dropped is gone), corrupt flips a
// byte inside each tensor frame sent, slow delays each send by its
// serialization time at the slowed bandwidth.
type faultConn struct {
	transport.Conn
	f *linkFaults
}

func (c faultConn) Send(ctx context.Context, msg []byte) error {
	c.f.mu.Lock()
	now := time.Now()
	cut := now.Before(c.f.cutUntil)
	tensor := len(msg) > wire.HeaderSize && isTensorFrame(msg)
	corrupt := tensor && (now.Before(c.f.corruptUntil) || c.f.corruptLeft > 0)
	if corrupt && c.f.corruptLeft > 0 {
		c.f.corruptLeft--
	}
	var delay time.Duration
	if now.Before(c.f.slowUntil) {
		delay = time.Duration(float64(len(msg)) / c.f.slowBps * float64(time.Second))
	}
	dup := now.Before(c.f.dupUntil) && tensor
	var at int
	if corrupt {
		at = wire.HeaderSize + c.f.rng.IntN(len(msg)-wire.HeaderSize)
	}
	c.f.mu.Unlock()
	if cut {
		return nil
	}
	if corrupt {
		bad := append([]byte(nil), msg...)
		bad[at] ^= 0x5a
		msg = bad
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if dup {
		if err := c.Conn.Send(ctx, msg); err != nil {
			return err
		}
	}
	return c.Conn.Send(ctx, msg)
}

func (c faultConn) Recv(ctx context.Context) ([]byte, error) {
	for {
		b, err := c.Conn.Recv(ctx)
		if err != nil || !c.f.cut() {
			return b, err
		}
	}
}

// isTensorFrame reports whether msg is an activation, gradient or tied
// gradient frame (byte 5 of the header is the type).
func isTensorFrame(msg []byte) bool {
	switch wire.Type(msg[5]) {
	case wire.TypeActivation, wire.TypeGradient, wire.TypeTiedGrad:
		return true
	}
	return false
}
