package compression

import "errors"

// Sentinel errors callers can test with errors.Is. Messages say what to do.
var (
	// ErrCorrupt means a payload failed validation: truncated, trailing
	// bytes, counts or indices out of range, non-finite scales. The frame
	// should be dropped and the peer treated as faulty or out of date.
	ErrCorrupt = errors.New("compression: corrupt payload (drop the frame; check that both peers run the same version)")
	// ErrShape means rows, cols and the buffer lengths do not agree.
	ErrShape = errors.New("compression: shape mismatch (buffer length must be rows*cols)")
	// ErrNonFinite means the input holds Inf or NaN, which a quantizing
	// codec cannot represent; training has most likely diverged.
	ErrNonFinite = errors.New("compression: non-finite value in input (training diverged? lower the learning rate)")
	// ErrConfig means a Config failed Validate.
	ErrConfig = errors.New("compression: invalid config")
	// ErrDesync means the two ends of a transform-coded (subspace-tc) link
	// hold different codec state: a message was lost or coded twice, one
	// end was restored from another snapshot, or the ends run different
	// options or arithmetic. The payload carries the sender's state
	// checksum, so this is caught before anything is decoded.
	ErrDesync = errors.New("compression: transform codec state differs between the ends (restore both ends from the same snapshot, or Reset both)")
)
