//go:build !js

package signaling

import (
	"crypto/hmac"
	"fmt"
	"slices"
)

// checkGuest checks an auth that claims a scope: only "join", only where
// join tokens are on, only with this room's token and a name that is not
// reserved.
func (s *Server) checkGuest(nonce []byte, room string, auth Message) error {
	switch {
	case auth.Scope != ScopeJoin:
		return fmt.Errorf("unknown scope %.20q (a join token only joins: scope %q)", auth.Scope, ScopeJoin)
	case !s.cfg.JoinTokens:
		return fmt.Errorf("room %s takes no join tokens (the run does not let its web view's visitors contribute: [web] contribute = true)", room)
	case slices.Contains(s.cfg.ReservedIDs, auth.From):
		return fmt.Errorf("the name %q is reserved; a join token joins only as a peer", auth.From)
	}
	want, _ := GuestProof(JoinToken(s.cfg.Key, room), nonce, room, auth.From)
	if !hmac.Equal([]byte(want), []byte(auth.Proof)) {
		return fmt.Errorf("wrong join token for room %s", room)
	}
	return nil
}
