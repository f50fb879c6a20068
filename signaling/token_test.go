package signaling

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestJoinTokenOnlyJoins: a room's join token lets a guest join that room
// under a name of its own, and nothing else: not another room, not the
// coordinator's name, not as the secret, not on a server that takes no
// tokens, and not under a scope other than "join".
func TestJoinTokenOnlyJoins(t *testing.T) {
	_, base := startServer(t, func(c *Config) { c.JoinTokens = true; c.ReservedIDs = []string{"coordinator"} })
	_, closed := startServer(t, nil) // the same key, join tokens off
	token := JoinToken(testKey, "run-a")
	guest := func(base, room, peer, tok string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := DialOptions(ctx, base+"/"+room, peer, "", ClientOptions{JoinToken: tok, Logger: quietLogger()})
		if err == nil {
			c.Close()
		}
		return err
	}
	host := dial(t, base, "run-a", "coordinator")
	if err := guest(base, "run-a", "tab-1", token); err != nil {
		t.Fatalf("the token did not join its own room: %v", err)
	}
	// The host saw the guest come and go, as any peer.
	recvType(t, host, TypeWelcome)
	if m := recvType(t, host, TypeJoin); m.From != "tab-1" {
		t.Errorf("join announced for %q, want tab-1", m.From)
	}

	for _, tc := range []struct {
		name, base, room, peer, token string
	}{
		{"another room", base, "run-b", "tab-1", token},
		{"the coordinator's name", base, "run-a", "coordinator", token},
		{"a server without join tokens", closed, "run-a", "tab-1", token},
		{"a token of another key", base, "run-a", "tab-1", JoinToken(make([]byte, KeySize), "run-a")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := guest(tc.base, tc.room, tc.peer, tc.token)
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("got %v, want a refusal (ErrAuth)", err)
			}
		})
	}
	t.Run("the token as the secret", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := DialOptions(ctx, base+"/run-a", "tab-2", token, ClientOptions{Logger: quietLogger()})
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("got %v, want ErrAuth: the token must not stand in for the secret", err)
		}
	})
	t.Run("a scope other than join", func(t *testing.T) {
		s := &Server{cfg: Config{Key: testKey, JoinTokens: true}}
		nonce := make([]byte, 32)
		proof, _ := GuestProof(token, nonce, "run-a", "tab-3")
		if err := s.checkGuest(nonce, "run-a", Message{From: "tab-3", Proof: proof, Scope: "admin"}); err == nil {
			t.Fatal("scope admin accepted")
		}
		if err := s.checkGuest(nonce, "run-a", Message{From: "tab-3", Proof: proof, Scope: ScopeJoin}); err != nil {
			t.Fatalf("the same proof under scope join: %v", err)
		}
	})
}
