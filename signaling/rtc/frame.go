package rtc

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/narrowband/narrowband/internal/transport"
)

// Chunk kinds; the high nibble is the format version.
const (
	chunkStart byte = 0x11
	chunkMore  byte = 0x12
	chunkFin   byte = 0x13
)

// MaxChunk bounds one data-channel message, header included: browsers
// promise no more than 64 KiB.
const MaxChunk = 64 << 10

const startHeader = 5

// ErrProtocol is wrapped by every framing error: the peer sent chunks that
// no narrowband peer of this version sends (a bug, a version mismatch or an
// attack). The link is closed.
var ErrProtocol = errors.New("rtc: protocol error on data channel (is the peer running the same narrowband version?)")

// appendChunks calls write for each chunk of msg, built in buf (reused; at
// least MaxChunk bytes). It stops at the first error.
func writeChunks(msg, buf []byte, write func(chunk []byte) error) error {
	buf[0] = chunkStart
	binary.BigEndian.PutUint32(buf[1:startHeader], uint32(len(msg)))
	n := copy(buf[startHeader:MaxChunk], msg)
	if err := write(buf[:startHeader+n]); err != nil {
		return err
	}
	for rest := msg[n:]; len(rest) > 0; {
		buf[0] = chunkMore
		n := copy(buf[1:MaxChunk], rest)
		if err := write(buf[:1+n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// reassembler turns chunks back into messages.
type reassembler struct {
	buf    []byte
	want   int
	active bool
}

// feed takes one chunk. It returns a complete message (owned by the caller)
// when chunk finished one, fin when the peer closed cleanly, or an error
// wrapping ErrProtocol for a chunk no valid sender produces.
func (r *reassembler) feed(chunk []byte) (msg []byte, fin bool, err error) {
	if len(chunk) == 0 {
		return nil, false, fmt.Errorf("%w: empty chunk", ErrProtocol)
	}
	if len(chunk) > MaxChunk {
		return nil, false, fmt.Errorf("%w: chunk of %d bytes, limit %d", ErrProtocol, len(chunk), MaxChunk)
	}
	switch chunk[0] {
	case chunkStart:
		if len(chunk) < startHeader {
			return nil, false, fmt.Errorf("%w: first chunk of %d bytes is shorter than its header", ErrProtocol, len(chunk))
		}
		total := binary.BigEndian.Uint32(chunk[1:startHeader])
		if uint64(total) > transport.MaxMessage {
			return nil, false, fmt.Errorf("%w: message of %d bytes announced, limit transport.MaxMessage = %d", ErrProtocol, total, transport.MaxMessage)
		}
		payload := chunk[startHeader:]
		if len(payload) > int(total) {
			return nil, false, fmt.Errorf("%w: first chunk carries %d bytes of a %d-byte message", ErrProtocol, len(payload), total)
		}
		// An incomplete message is dropped here: its sender gave up on it.
		r.buf = make([]byte, 0, total)
		r.want = int(total)
		r.active = true
		return r.add(payload)
	case chunkMore:
		if !r.active {
			return nil, false, fmt.Errorf("%w: continuation chunk without a first chunk", ErrProtocol)
		}
		payload := chunk[1:]
		if len(payload) > r.want-len(r.buf) {
			return nil, false, fmt.Errorf("%w: continuation overruns the announced %d bytes", ErrProtocol, r.want)
		}
		if len(payload) == 0 {
			return nil, false, fmt.Errorf("%w: empty continuation chunk", ErrProtocol)
		}
		return r.add(payload)
	case chunkFin:
		if len(chunk) != 1 {
			return nil, false, fmt.Errorf("%w: close chunk with %d bytes of payload", ErrProtocol, len(chunk)-1)
		}
		r.buf, r.active = nil, false
		return nil, true, nil
	default:
		return nil, false, fmt.Errorf("%w: unknown chunk kind 0x%02x", ErrProtocol, chunk[0])
	}
}

func (r *reassembler) add(p []byte) ([]byte, bool, error) {
	r.buf = append(r.buf, p...)
	if len(r.buf) < r.want {
		return nil, false, nil
	}
	msg := r.buf
	r.buf, r.active = nil, false
	return msg, false, nil
}
