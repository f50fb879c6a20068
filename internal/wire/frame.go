package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
)

// Magic opens every frame; Version is the only format version this code
// reads and writes.
const (
	Magic   = "NBW1"
	Version = 1
)

// HeaderSize is the size of the fixed frame header in bytes.
const HeaderSize = 30

// crcOffset is where the checksum sits; it covers everything before it.
const crcOffset = 26

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Sentinel errors. Decoders wrap them with the offending values; test with
// errors.Is.
var (
	ErrBadMagic  = errors.New("wire: not a narrowband frame (bad magic; is the peer speaking another protocol, or is the stream out of sync?)")
	ErrVersion   = errors.New("wire: unsupported frame version (run the same narrowband version on every peer)")
	ErrType      = errors.New("wire: unknown frame type (peer is newer or the frame is corrupt)")
	ErrFlags     = errors.New("wire: unknown frame flags (peer is newer or the frame is corrupt)")
	ErrTooLarge  = errors.New("wire: frame payload over the receiver's limit (raise the limit or send smaller micro-batches)")
	ErrChecksum  = errors.New("wire: frame checksum mismatch (data corrupted in transit; drop the link and resend)")
	ErrTruncated = errors.New("wire: truncated frame (the stream ended or the message was cut short)")
	ErrTrailing  = errors.New("wire: bytes after the frame (a message carries exactly one frame; is the sender batching frames?)")
)

// Type says what a frame carries. The zero value is unknown and never valid
// on the wire.
type Type uint8

const (
	TypeUnknown     Type = iota
	TypeActivation       // forward: a stage's output for the next stage
	TypeGradient         // backward: the gradient w.r.t. that activation
	TypeTiedGrad         // gradient of the tied embedding from the last stage to the first
	TypeTokens           // token ids (targets, or ids a receiver needs to rebuild activations)
	TypeControl          // coordinator commands and replies
	TypeHeartbeat        // liveness and RTT probes
	TypeMetrics          // metrics events forwarded to the coordinator
	TypeReplicaGrad      // a chunk of a stage's weight gradient, summed among its replicas
	TypeSync             // a joining replica's download: a chunk of its stage's state, or of a step to replay
	TypeVerify           // a spot check's input: an activation frame as its sender sent it, for another replica to recompute from

	typeEnd // one past the last valid type
)

var typeNames = [...]string{"unknown", "activation", "gradient", "tied-grad", "tokens", "control", "heartbeat", "metrics", "replica-grad", "sync", "verify"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Valid reports whether t is a type this version defines.
func (t Type) Valid() bool { return t > TypeUnknown && t < typeEnd }

// Flags are per-frame processing bits set by the compression layer, so a
// receiver knows which lossless steps to undo.
type Flags uint8

const (
	// FlagShuffle: the payload's bytes were split into planes (byte i of
	// every element together) before any lz4 step.
	FlagShuffle Flags = 1 << 0
	// FlagLZ4: lz4 block compression applied last (after shuffle, if any).
	FlagLZ4 Flags = 1 << 1

	knownFlags = FlagShuffle | FlagLZ4
)

func (f Flags) String() string {
	if f == 0 {
		return "none"
	}
	s := ""
	add := func(name string) {
		if s != "" {
			s += "|"
		}
		s += name
	}
	if f&FlagShuffle != 0 {
		add("shuffle")
	}
	if f&FlagLZ4 != 0 {
		add("lz4")
	}
	if rest := f &^ knownFlags; rest != 0 {
		add(fmt.Sprintf("0x%02x", uint8(rest)))
	}
	return s
}

// Header is the decoded fixed part of a frame.
type Header struct {
	Type  Type
	Codec uint8  // compression codec id; 0 = raw fp32
	Flags Flags  // lossless steps applied after the codec
	Stage uint16 // sender's pipeline stage
	Step  uint64 // optimizer step the frame belongs to
	Micro uint32 // micro-batch within the step
	// Length is the payload length. Decoders fill it in; Append ignores it
	// and writes len(payload).
	Length uint32
}

// Append appends one frame carrying payload to dst and returns the extended
// slice. It writes the header as given; Decode rejects a frame whose Type or
// Flags are not valid, so senders should use the constants above. Append
// panics only if payload exceeds 4 GiB, which no transport can carry
// (transport.MaxMessage is 64 MiB).
func Append(dst []byte, h Header, payload []byte) []byte {
	if uint64(len(payload)) > math.MaxUint32 {
		panic(fmt.Sprintf("wire: Append of a %d-byte payload; frames hold at most 4 GiB", len(payload)))
	}
	dst = slices.Grow(dst, HeaderSize+len(payload))
	start := len(dst)
	dst = dst[:start+HeaderSize]
	b := dst[start:]
	copy(b[0:4], Magic)
	b[4] = Version
	b[5] = byte(h.Type)
	b[6] = h.Codec
	b[7] = byte(h.Flags)
	binary.LittleEndian.PutUint16(b[8:], h.Stage)
	binary.LittleEndian.PutUint64(b[10:], h.Step)
	binary.LittleEndian.PutUint32(b[18:], h.Micro)
	binary.LittleEndian.PutUint32(b[22:], uint32(len(payload)))
	crc := crc32.Update(0, castagnoli, b[:crcOffset])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.LittleEndian.PutUint32(b[crcOffset:], crc)
	return append(dst, payload...)
}

// parseHeader checks everything the header alone can tell: magic, version,
// type, flags and length against maxPayload. It does not check the CRC.
func parseHeader(b []byte, maxPayload int) (Header, error) {
	if string(b[0:4]) != Magic {
		return Header{}, fmt.Errorf("frame starts with %q, want %q: %w", b[0:4], Magic, ErrBadMagic)
	}
	if b[4] != Version {
		return Header{}, fmt.Errorf("frame version %d, this build speaks %d: %w", b[4], Version, ErrVersion)
	}
	h := Header{
		Type:   Type(b[5]),
		Codec:  b[6],
		Flags:  Flags(b[7]),
		Stage:  binary.LittleEndian.Uint16(b[8:]),
		Step:   binary.LittleEndian.Uint64(b[10:]),
		Micro:  binary.LittleEndian.Uint32(b[18:]),
		Length: binary.LittleEndian.Uint32(b[22:]),
	}
	if !h.Type.Valid() {
		return Header{}, fmt.Errorf("frame type %d: %w", b[5], ErrType)
	}
	if h.Flags&^knownFlags != 0 {
		return Header{}, fmt.Errorf("frame flags %s: %w", h.Flags, ErrFlags)
	}
	if maxPayload < 0 || uint64(h.Length) > uint64(maxPayload) {
		return Header{}, fmt.Errorf("%s frame (stage %d, step %d) declares a %d-byte payload, limit %d: %w", h.Type, h.Stage, h.Step, h.Length, maxPayload, ErrTooLarge)
	}
	return h, nil
}

// Decode checks the one frame that is all of b and returns its header and
// payload. The payload aliases b. A frame whose payload exceeds maxPayload
// bytes is rejected with ErrTooLarge; b longer than its frame is an error
// too (a message carries exactly one frame).
func Decode(b []byte, maxPayload int) (Header, []byte, error) {
	if len(b) < HeaderSize {
		return Header{}, nil, fmt.Errorf("%d bytes, a frame header needs %d: %w", len(b), HeaderSize, ErrTruncated)
	}
	h, err := parseHeader(b, maxPayload)
	if err != nil {
		return Header{}, nil, err
	}
	end := HeaderSize + uint64(h.Length)
	if uint64(len(b)) < end {
		return Header{}, nil, fmt.Errorf("%s frame declares %d payload bytes, message holds %d: %w", h.Type, h.Length, len(b)-HeaderSize, ErrTruncated)
	}
	if uint64(len(b)) > end {
		return Header{}, nil, fmt.Errorf("%s frame of %d payload bytes followed by %d stray bytes: %w", h.Type, h.Length, uint64(len(b))-end, ErrTrailing)
	}
	payload := b[HeaderSize:end:end]
	if err := verify(b[:HeaderSize], payload); err != nil {
		return Header{}, nil, fmt.Errorf("%s frame (stage %d, step %d, micro %d): %w", h.Type, h.Stage, h.Step, h.Micro, err)
	}
	return h, payload, nil
}

func verify(hdr, payload []byte) error {
	want := binary.LittleEndian.Uint32(hdr[crcOffset:])
	got := crc32.Update(crc32.Update(0, castagnoli, hdr[:crcOffset]), castagnoli, payload)
	if got != want {
		return fmt.Errorf("crc32c %08x, header says %08x: %w", got, want, ErrChecksum)
	}
	return nil
}

// readChunk is how much ReadFrame allocates ahead of data actually read,
// so a header that lies about its length costs at most this much.
const readChunk = 1 << 20

// ReadFrame reads one frame from r. The header is checked (magic, version,
// type, flags, length ≤ maxPayload) before any payload is read or
// allocated. The payload is read into buf when it fits (cap(buf) ≥ length)
// and otherwise into a buffer grown as bytes actually arrive, so a short
// stream with a large declared length allocates little; the returned payload
// may alias buf. At a clean end of stream (no byte of a new frame) ReadFrame
// returns io.EOF unwrapped; a frame cut short is ErrTruncated.
func ReadFrame(r io.Reader, maxPayload int, buf []byte) (Header, []byte, error) {
	var hdr [HeaderSize]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return Header{}, nil, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return Header{}, nil, fmt.Errorf("stream ended %d bytes into a frame header: %w", n, ErrTruncated)
		}
		return Header{}, nil, fmt.Errorf("wire: read frame header: %w", err)
	}
	h, err := parseHeader(hdr[:], maxPayload)
	if err != nil {
		return Header{}, nil, err
	}
	n := int(h.Length)
	var p []byte
	if cap(buf) >= n {
		p = buf[:n]
		if _, err := io.ReadFull(r, p); err != nil {
			return Header{}, nil, readErr(h, err)
		}
	} else {
		// Grow geometrically, by hand rather than with append, so the
		// final capacity is exactly n and never more than the limit.
		for at := 0; at < n; {
			size := min(n, max(2*at, readChunk))
			next := make([]byte, size)
			copy(next, p[:at])
			p = next
			if _, err := io.ReadFull(r, p[at:]); err != nil {
				return Header{}, nil, readErr(h, err)
			}
			at = size
		}
	}
	if err := verify(hdr[:], p); err != nil {
		return Header{}, nil, fmt.Errorf("%s frame (stage %d, step %d, micro %d): %w", h.Type, h.Stage, h.Step, h.Micro, err)
	}
	return h, p, nil
}

func readErr(h Header, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("stream ended inside the %d-byte payload of a %s frame: %w", h.Length, h.Type, ErrTruncated)
	}
	return fmt.Errorf("wire: read %d-byte payload of a %s frame: %w", h.Length, h.Type, err)
}
