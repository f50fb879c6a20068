// Package transport defines how pipeline stages exchange messages: Conn, one
// end of a reliable, ordered, message-oriented link. The runtime only ever
// talks to a Conn; the in-process pipe, the link shaper and the WebRTC data
// channel transport (package signaling) are interchangeable implementations,
// and one conformance suite (transporttest) runs against each of them.
package transport
