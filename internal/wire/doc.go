// Package wire is the frame format every message between stages travels in:
// activations, gradients, control and heartbeats. A frame is a fixed 30-byte
// header followed by an opaque payload (the compression layer's bytes):
//
//	off size field
//	  0    4 magic "NBW1"
//	  4    1 version (1)
//	  5    1 type (Type: activation, gradient, …)
//	  6    1 codec id (set by the compression layer; 0 = raw fp32)
//	  7    1 flags (Flags: lz4, shuffle)
//	  8    2 stage (sender's pipeline stage)
//	 10    8 step
//	 18    4 micro-batch
//	 22    4 payload length
//	 26    4 CRC-32C (Castagnoli) of bytes 0..25 and the payload
//	 30    … payload
//
// All integers are little-endian, like the float payloads they describe.
// Frames are bounded: decoders take the largest payload the caller accepts
// and reject a longer frame from its header alone, before allocating, so a
// hostile or corrupt peer cannot make a stage allocate gigabytes. Every
// failure wraps one of the sentinel errors (ErrBadMagic, ErrVersion,
// ErrType, ErrFlags, ErrTooLarge, ErrChecksum, ErrTruncated, ErrTrailing),
// so callers can tell a version mismatch (upgrade a peer) from corruption
// (drop the link).
//
// A frame is the unit a transport.Conn carries: Append builds one into a
// reusable buffer, Decode checks one received message, and ReadFrame reads
// frames back to back from a byte stream (a file or a stream socket).
package wire
