package signaling

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// KeySize is the length of a derived room key.
const KeySize = 32

// kdfIterations makes each guess at a secret from a captured proof cost about
// a millisecond; the derivation happens once per process, not per message.
const kdfIterations = 20000

// DeriveKey turns a run secret into the key that proofs and TURN credentials
// are computed from. The server keeps only this key.
func DeriveKey(secret string) ([]byte, error) {
	if secret == "" {
		return nil, fmt.Errorf("signaling: empty run secret; set one (e.g. `openssl rand -hex 16`)")
	}
	k, err := pbkdf2.Key(sha256.New, secret, []byte("narrowband signaling v1"), kdfIterations, KeySize)
	if err != nil {
		return nil, fmt.Errorf("signaling: derive key: %w", err)
	}
	return k, nil
}

// Proof is the answer to a challenge: hex(HMAC-SHA256(key, nonce‖room‖peer)).
// Room and peer are bound into the proof so it cannot be replayed for
// another room or identity; the nonce is fresh per connection.
func Proof(key, nonce []byte, room, peer string) string {
	h := hmac.New(sha256.New, key)
	h.Write(nonce)
	// Lengths first so ("ab","c") and ("a","bc") differ.
	h.Write([]byte{byte(len(room)), byte(len(peer))})
	h.Write([]byte(room))
	h.Write([]byte(peer))
	return hex.EncodeToString(h.Sum(nil))
}

func checkProof(key, nonce []byte, room, peer, proof string) bool {
	want := Proof(key, nonce, room, peer)
	return hmac.Equal([]byte(want), []byte(proof))
}

func newNonce() ([]byte, string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return b, base64.StdEncoding.EncodeToString(b)
}

// decodeNonce parses a challenge's nonce.
func decodeNonce(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) < 16 || len(b) > 64 {
		return nil, fmt.Errorf("%w: challenge nonce is not 16–64 bytes of base64", ErrBadMessage)
	}
	return b, nil
}
