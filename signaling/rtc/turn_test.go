package rtc

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/narrowband/narrowband/signaling"
)

// TestTURNRelay connects two peers that may use only relay candidates from
// the embedded TURN server (on loopback), with credentials derived from the
// run secret.
func TestTURNRelay(t *testing.T) {
	ts, err := signaling.StartTURN(signaling.TURNConfig{ListenUDP: "127.0.0.1:0", Key: testKey, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	turnURL := fmt.Sprintf("turn:%s?transport=udp", ts.Addr())
	cfgFor := func(id string, key []byte) Config {
		c := loopbackConfig()
		c.RelayOnly = true
		user, pass := signaling.TURNCredentials(key, id)
		c.ICEServers = []ICEServer{{URLs: []string{turnURL}, Username: user, Credential: pass}}
		return c
	}

	t.Run("right credentials relay", func(t *testing.T) {
		url := startSignal(t)
		sa, sb := join(t, url, "a"), join(t, url, "b")
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		var b *Conn
		var errB error
		wg.Add(1)
		go func() { defer wg.Done(); b, errB = Connect(ctx, sb, "a", cfgFor("b", testKey)) }()
		a, err := Connect(ctx, sa, "b", cfgFor("a", testKey))
		wg.Wait()
		if err != nil || errB != nil {
			t.Fatalf("connect through TURN: a: %v; b: %v", err, errB)
		}
		defer a.Close()
		defer b.Close()
		if err := a.Send(ctx, make([]byte, 200<<10)); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Recv(ctx); err != nil || len(got) != 200<<10 {
			t.Fatalf("recv through relay: %d bytes, %v", len(got), err)
		}
		if s := a.Stats(); s.Candidate != "relay" {
			t.Errorf("Candidate = %q, want relay", s.Candidate)
		}
	})
	t.Run("wrong secret gets no relay", func(t *testing.T) {
		url := startSignal(t)
		sa, sb := join(t, url, "a"), join(t, url, "b")
		wrong, _ := signaling.DeriveKey("not the run secret")
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		go func() {
			if c, err := Connect(ctx, sb, "a", cfgFor("b", wrong)); err == nil {
				c.Close()
			}
		}()
		if c, err := Connect(ctx, sa, "b", cfgFor("a", wrong)); err == nil {
			c.Close()
			t.Fatal("peers without the secret connected through the TURN relay")
		}
	})
}
