package rtc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/narrowband/narrowband/internal/transport"
)

func chunksOf(t *testing.T, msg []byte) [][]byte {
	t.Helper()
	var out [][]byte
	buf := make([]byte, MaxChunk)
	err := writeChunks(msg, buf, func(c []byte) error {
		if len(c) > MaxChunk {
			t.Fatalf("chunk of %d bytes > MaxChunk", len(c))
		}
		out = append(out, append([]byte(nil), c...))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestChunkRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, MaxChunk - startHeader, MaxChunk - startHeader + 1, 3*MaxChunk + 17} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i * 7)
		}
		var r reassembler
		chunks := chunksOf(t, msg)
		for i, c := range chunks {
			got, fin, err := r.feed(c)
			if err != nil || fin {
				t.Fatalf("n=%d chunk %d: fin=%v err=%v", n, i, fin, err)
			}
			if (got != nil) != (i == len(chunks)-1) {
				t.Fatalf("n=%d: message completed at chunk %d of %d", n, i, len(chunks))
			}
			if got != nil && !bytes.Equal(got, msg) {
				t.Fatalf("n=%d: reassembled message differs", n)
			}
		}
	}
}

func TestChunkAbandonedMessageDropped(t *testing.T) {
	var r reassembler
	big := chunksOf(t, make([]byte, 3*MaxChunk))
	for _, c := range big[:2] { // the sender gave up after two chunks
		if m, _, err := r.feed(c); m != nil || err != nil {
			t.Fatalf("partial message: %v %v", m, err)
		}
	}
	next := chunksOf(t, []byte("marker"))
	m, _, err := r.feed(next[0])
	if err != nil || string(m) != "marker" {
		t.Fatalf("after an abandoned message got %q, %v; want the next message", m, err)
	}
}

func TestChunkHostile(t *testing.T) {
	hdr := func(total uint32, payload int) []byte {
		b := make([]byte, startHeader+payload)
		b[0] = chunkStart
		binary.BigEndian.PutUint32(b[1:], total)
		return b
	}
	cases := map[string][][]byte{
		"empty":                {{}},
		"unknown kind":         {{0x42, 1, 2}},
		"short header":         {{chunkStart, 0, 0}},
		"over MaxMessage":      {hdr(transport.MaxMessage+1, 0)},
		"payload over total":   {hdr(2, 3)},
		"orphan continuation":  {{chunkMore, 1}},
		"overrun":              {hdr(4, 2), {chunkMore, 1, 2, 3}},
		"fin with payload":     {{chunkFin, 0}},
		"empty continuation":   {hdr(4, 2), {chunkMore}},
		"chunk over MaxChunk":  {append([]byte{chunkMore}, make([]byte, MaxChunk)...)},
		"future version start": {{0x21, 0, 0, 0, 0}},
	}
	for name, chunks := range cases {
		t.Run(name, func(t *testing.T) {
			var r reassembler
			var err error
			for _, c := range chunks {
				if _, _, err = r.feed(c); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
		})
	}
}

// FuzzReassemble feeds hostile chunk sequences: the input is split into
// chunks by a one-byte length prefix (scaled up so large chunks occur).
func FuzzReassemble(f *testing.F) {
	f.Add([]byte{6, chunkStart, 0, 0, 0, 1, 'x'})
	f.Add([]byte{5, chunkStart, 0, 0, 0, 3, 2, chunkMore, 'a', 1, chunkFin})
	f.Add([]byte{5, chunkStart, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{2, chunkMore, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		var r reassembler
		for len(in) > 0 {
			n := int(in[0])
			in = in[1:]
			if n > len(in) {
				n = len(in)
			}
			msg, _, err := r.feed(in[:n])
			in = in[n:]
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("error %v does not wrap ErrProtocol", err)
				}
				return
			}
			if len(msg) > transport.MaxMessage {
				t.Fatalf("message of %d bytes", len(msg))
			}
		}
	})
}
