package signaling

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// ScopeJoin is Message.Scope of an auth proved with a join token.
const ScopeJoin = "join"

// JoinToken is the token that lets a guest (a browser tab the run's web
// view hands it to) join one room of a server whose Config.JoinTokens is
// on, and nothing else: it is bound to the room, it is not the secret (the
// key cannot be recovered from it, so it gives no TURN credentials and no
// other room), and the server refuses it for the names in
// Config.ReservedIDs. It is hex, so a page can carry it as text.
func JoinToken(key []byte, room string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("narrowband join token v1\x00"))
	h.Write([]byte(room))
	return hex.EncodeToString(h.Sum(nil))
}

// GuestProof is a guest's answer to the server's challenge: the same HMAC
// as Proof, keyed by the join token's bytes instead of the run key.
func GuestProof(token string, nonce []byte, room, peer string) (string, error) {
	k, err := hex.DecodeString(token)
	if err != nil || len(k) != sha256.Size {
		return "", fmt.Errorf("signaling: a join token is %d hex digits", 2*sha256.Size)
	}
	return Proof(k, nonce, room, peer), nil
}
