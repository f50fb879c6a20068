package signaling

import (
	"errors"
	"fmt"
	"time"
)

// ErrAuth is wrapped by Dial when the server refused the peer's proof: the
// secret does not match the one the server was started with for this room.
var ErrAuth = errors.New("signaling: authentication failed (check that every peer and the server use the same run secret)")

// ErrRefused is wrapped by Dial when the server refused the join for a reason
// other than authentication (room full, duplicate peer ID, server full).
var ErrRefused = errors.New("signaling: join refused by server")

// ErrClosed is returned by Client and Local methods after Close, or after the
// server dropped the connection.
var ErrClosed = errors.New("signaling: connection closed (dial again to rejoin the room)")

// ErrBadMessage is wrapped by DecodeMessage for bytes that are not a valid
// signaling message.
var ErrBadMessage = errors.New("signaling: bad message")

// ErrGaveUp is wrapped by DialRetry when every attempt failed for a reason
// worth retrying until RetryOptions.MaxElapsed or MaxAttempts ran out; the
// last attempt's error is wrapped too.
var ErrGaveUp = errors.New("signaling: gave up dialing the signaling server (is it running and reachable from here? RetryOptions.MaxElapsed bounds how long DialRetry waits)")

// HTTPError is wrapped by Dial when the server answered the websocket
// upgrade with an HTTP error instead: 503 when it is full, 429 when this
// address holds too many sockets that have not authenticated, 400 for a
// bad room name, 404 when the URL names something else.
type HTTPError struct {
	StatusCode int
	Status     string // e.g. "503 Service Unavailable"
	// Message is the start of the response body: the server's reason.
	Message string
	// RetryAfter is the server's Retry-After hint, 0 if none.
	RetryAfter time.Duration
}

func (e *HTTPError) Error() string {
	if e.Message == "" {
		return "HTTP " + e.Status
	}
	return "HTTP " + e.Status + ": " + e.Message
}

// refusal is an error message the server sent instead of a welcome; it
// wraps ErrAuth or ErrRefused and keeps the code for DialRetry.
type refusal struct {
	sentinel error
	code     string
	text     string
}

func (e *refusal) Error() string {
	if e.sentinel == ErrAuth {
		return fmt.Sprintf("%v: server says: %s", e.sentinel, e.text)
	}
	return fmt.Sprintf("%v: server says: %s (code %s)", e.sentinel, e.text, e.code)
}

func (e *refusal) Unwrap() error { return e.sentinel }

// serverError is the error a client returns for the server's error message.
func serverError(m Message) error {
	if m.Code == CodeAuth {
		return &refusal{sentinel: ErrAuth, code: m.Code, text: m.Error}
	}
	return &refusal{sentinel: ErrRefused, code: m.Code, text: m.Error}
}
