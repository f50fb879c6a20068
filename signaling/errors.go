package signaling

import "errors"

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
