package pipeline

import (
	"context"
	"fmt"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
)

// Control messages can be far larger than one transport message: a
// stage's state (weights and both AdamW moments) of a GPT-2-small-sized
// model is 170 MB, over transport.MaxMessage (64 MiB). sendControl cuts
// such a frame into parts, each an ordinary control frame of its own
// (so every part is checksummed and bounded like any frame) whose header
// says which part it is: Micro = part number from 1, Step = the number of
// parts. A whole message has Micro = 0. controlReader puts the parts back
// together; a small message (a heartbeat) may arrive between two parts
// and is delivered at once.

// ctrlPartBytes is the size of one part: well under transport.MaxMessage.
const ctrlPartBytes = 16 << 20

// sendControl sends one encoded control frame on c, in parts if it is
// large. Big sends on one connection must not overlap (the worker holds
// ctrlMu; the driver sends state from its one goroutine).
func sendControl(ctx context.Context, c transport.Conn, frame []byte, stage int) error {
	if len(frame) <= ctrlPartBytes {
		return c.Send(ctx, frame)
	}
	n := (len(frame) + ctrlPartBytes - 1) / ctrlPartBytes
	for i := 0; i < n; i++ {
		chunk := frame[i*ctrlPartBytes : min(len(frame), (i+1)*ctrlPartBytes)]
		part := wire.Append(nil, wire.Header{Type: wire.TypeControl, Stage: uint16(stage), Step: uint64(n), Micro: uint32(i + 1)}, chunk)
		if err := c.Send(ctx, part); err != nil {
			return err
		}
	}
	return nil
}

// controlReader reassembles the frames sendControl cut into parts.
type controlReader struct {
	buf        []byte
	next, want int // the part expected next (from 1), and how many there are
	// heard, if set, is called on every frame received, parts included:
	// a peer sending a 170 MB state is alive while it does.
	heard func()
}

// read returns the next whole control frame from c.
func (r *controlReader) read(ctx context.Context, c transport.Conn) ([]byte, error) {
	for {
		raw, err := c.Recv(ctx)
		if err != nil {
			return nil, err
		}
		if r.heard != nil {
			r.heard()
		}
		h, payload, err := wire.Decode(raw, maxControl)
		if err != nil || h.Type != wire.TypeControl || h.Micro == 0 {
			return raw, nil // decodeCtrl says what is wrong with it, if anything
		}
		if err := r.add(h, payload); err != nil {
			r.buf, r.next, r.want = nil, 0, 0
			return nil, err
		}
		if r.next > r.want {
			whole := r.buf
			r.buf, r.next, r.want = nil, 0, 0
			return whole, nil
		}
	}
}

func (r *controlReader) add(h wire.Header, payload []byte) error {
	part, total := int(h.Micro), h.Step
	if total < 2 || total > maxControl/ctrlPartBytes+1 {
		return fmt.Errorf("control part %d of %d: want 2..%d parts", part, total, maxControl/ctrlPartBytes+1)
	}
	if r.want == 0 {
		if part != 1 {
			return fmt.Errorf("control part %d of %d arrived first", part, total)
		}
		r.want, r.next = int(total), 1
	}
	if part != r.next || int(total) != r.want {
		return fmt.Errorf("control part %d of %d arrived, expected part %d of %d", part, total, r.next, r.want)
	}
	if len(payload) > ctrlPartBytes || (part < r.want && len(payload) != ctrlPartBytes) {
		return fmt.Errorf("control part %d of %d holds %d bytes, want %d", part, total, len(payload), ctrlPartBytes)
	}
	r.buf = append(r.buf, payload...)
	r.next++
	return nil
}
