package signaling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// Message types. See the package comment for who sends which.
const (
	TypeChallenge = "challenge"
	TypeAuth      = "auth"
	TypeWelcome   = "welcome"
	TypeJoin      = "join"
	TypeLeave     = "leave"
	TypeError     = "error"
	TypeOffer     = "offer"
	TypeAnswer    = "answer"
	TypeCandidate = "candidate"
	TypeMessage   = "message"
)

// Error codes carried in Message.Code of an error message.
const (
	CodeAuth       = "auth"
	CodeBadMessage = "bad-message"
	CodeTooLarge   = "too-large"
	CodeRate       = "rate"
	CodeFull       = "full"
	CodeDuplicate  = "duplicate"
	CodeOverflow   = "overflow"
	CodeNoPeer     = "no-peer"
)

// DefaultMaxMessageBytes bounds one signaling message. 64 KiB holds any SDP
// offer with room to spare and matches what browsers accept.
const DefaultMaxMessageBytes = 64 << 10

// maxIDLen bounds peer IDs and room names.
const maxIDLen = 64

// maxPeersListed bounds the peers list of a welcome message a client accepts.
const maxPeersListed = 4096

// Message is one signaling message (one JSON object in one websocket text
// frame). Fields unused by a type are left empty.
type Message struct {
	Type  string `json:"type"`
	From  string `json:"from,omitempty"`
	To    string `json:"to,omitempty"`
	Nonce string `json:"nonce,omitempty"` // challenge
	Proof string `json:"proof,omitempty"` // auth
	// Scope is "join" on an auth proved with a join token (JoinToken)
	// instead of the run's secret; "" is the secret.
	Scope string          `json:"scope,omitempty"` // auth
	Peers []string        `json:"peers,omitempty"` // welcome: other members
	Code  string          `json:"code,omitempty"`  // error
	Error string          `json:"error,omitempty"` // error
	Data  json.RawMessage `json:"data,omitempty"`  // relayed payload
}

// relayed reports whether t is a peer-to-peer type the server forwards.
func relayed(t string) bool {
	switch t {
	case TypeOffer, TypeAnswer, TypeCandidate, TypeMessage:
		return true
	}
	return false
}

// isSignal reports whether t is WebRTC session traffic (routed to Signals).
func isSignal(t string) bool {
	return t == TypeOffer || t == TypeAnswer || t == TypeCandidate
}

// DecodeMessage parses and validates one message of at most maxBytes. It
// rejects unknown fields, trailing bytes, unknown types and malformed IDs, so
// the rest of the package only ever sees well-formed messages.
func DecodeMessage(b []byte, maxBytes int) (Message, error) {
	var m Message
	if len(b) > maxBytes {
		return m, fmt.Errorf("%w: %d bytes, limit %d", ErrBadMessage, len(b), maxBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Message{}, fmt.Errorf("%w: not a JSON message object: %v", ErrBadMessage, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Message{}, fmt.Errorf("%w: trailing data after the JSON object", ErrBadMessage)
	}
	if err := m.validate(); err != nil {
		return Message{}, err
	}
	return m, nil
}

func (m *Message) validate() error {
	switch m.Type {
	case TypeChallenge, TypeAuth, TypeWelcome, TypeJoin, TypeLeave, TypeError,
		TypeOffer, TypeAnswer, TypeCandidate, TypeMessage:
	case "":
		return fmt.Errorf("%w: missing \"type\"", ErrBadMessage)
	default:
		return fmt.Errorf("%w: unknown type %.40q", ErrBadMessage, m.Type)
	}
	if m.From != "" {
		if err := ValidID(m.From); err != nil {
			return fmt.Errorf("%w: from: %v", ErrBadMessage, err)
		}
	}
	if m.To != "" {
		if err := ValidID(m.To); err != nil {
			return fmt.Errorf("%w: to: %v", ErrBadMessage, err)
		}
	}
	if relayed(m.Type) && m.To == "" && m.From == "" {
		return fmt.Errorf("%w: %s message needs \"to\" (sending) or \"from\" (received)", ErrBadMessage, m.Type)
	}
	if len(m.Peers) > maxPeersListed {
		return fmt.Errorf("%w: %d peers listed, limit %d", ErrBadMessage, len(m.Peers), maxPeersListed)
	}
	for _, p := range m.Peers {
		if err := ValidID(p); err != nil {
			return fmt.Errorf("%w: peers: %v", ErrBadMessage, err)
		}
	}
	return nil
}

// ValidID checks a peer ID or room name: 1–64 characters from
// [A-Za-z0-9._-], so IDs are safe in URLs, logs and file names.
func ValidID(s string) error {
	if s == "" {
		return fmt.Errorf("empty name")
	}
	if len(s) > maxIDLen {
		return fmt.Errorf("name of %d bytes, limit %d", len(s), maxIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("name %.64q has character %q; use only letters, digits, '.', '_' and '-'", s, c)
		}
	}
	return nil
}
