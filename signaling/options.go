package signaling

import (
	"log/slog"
	"time"
)

// ClientOptions tunes Dial; the zero value is fine.
type ClientOptions struct {
	// Key, if set, is used instead of deriving it from the secret (saves the
	// key derivation when one process dials many times).
	Key []byte
	// MaxMessageBytes bounds one incoming message (default 64 KiB).
	MaxMessageBytes int
	// JoinToken, if set, authenticates as a guest with the room's join
	// token (JoinToken) instead of the secret, which is then ignored.
	JoinToken string
	// ServerTimeout is how long the client waits without hearing from the
	// server (messages or pings, sent every Config.PingInterval) before it
	// declares the connection dead (default 45 s).
	ServerTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}
