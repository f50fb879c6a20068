// Package transport defines how pipeline stages exchange messages: Conn, one
// end of a reliable, ordered, message-oriented link. The runtime only ever
// talks to a Conn; the in-process pipe, the link shaper and the WebRTC data
// channel transport (package signaling) are interchangeable implementations,
// and one conformance suite (transporttest) runs against each of them.
//
// Data flows like this: a stage builds a frame (package wire) and calls
// Send, which copies it into the link's send buffer and returns, blocking
// only when that buffer is full (back-pressure is how a slow link or a slow
// next stage throttles the pipeline). The peer's Recv returns frames in
// order. Close is graceful for what was already sent: the peer drains it
// and then sees io.EOF.
//
// Implementations here:
//
//   - Pipe: two connected in-process ends, for tests and one-machine runs.
//     No goroutines; a bounded buffer per direction (PipeOptions).
//   - Shape: wraps any Conn so its outgoing direction behaves like a home
//     internet link (LinkProfile: bandwidth, latency, jitter, loss). The
//     kernel here has no netem, so this is where latency and loss come
//     from, for the pipe and for WebRTC alike. The timing model is a pure
//     function of time and a seeded generator, so runs are reproducible
//     and its statistics are tested exactly.
package transport
