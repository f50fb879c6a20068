package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

func sampleHeader() Header {
	return Header{Type: TypeActivation, Codec: 3, Flags: FlagShuffle | FlagLZ4, Stage: 7, Step: 1<<40 + 5, Micro: 123456}
}

func TestRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 29, 30, 1200, 1 << 16} {
		for _, typ := range []Type{TypeActivation, TypeGradient, TypeTiedGrad, TypeTokens, TypeControl, TypeHeartbeat, TypeMetrics} {
			t.Run(fmt.Sprintf("size=%d/type=%s", size, typ), func(t *testing.T) {
				h := sampleHeader()
				h.Type = typ
				payload := bytes.Repeat([]byte{0xAB, 0x01, 0x7F}, size)[:size]
				prefix := []byte("keep")
				frame := Append(prefix, h, payload)
				if !bytes.Equal(frame[:4], prefix) {
					t.Fatalf("Append overwrote dst's existing bytes")
				}
				if len(frame) != 4+HeaderSize+size {
					t.Fatalf("frame is %d bytes, want %d", len(frame), 4+HeaderSize+size)
				}
				got, p, err := Decode(frame[4:], size)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				h.Length = uint32(size)
				if got != h {
					t.Errorf("header: got %+v, want %+v", got, h)
				}
				if !bytes.Equal(p, payload) {
					t.Errorf("payload differs")
				}
				rh, rp, err := ReadFrame(bytes.NewReader(frame[4:]), size, nil)
				if err != nil || rh != h || !bytes.Equal(rp, payload) {
					t.Errorf("ReadFrame: header %+v, %d bytes, err %v; want %+v, %d bytes", rh, len(rp), err, h, size)
				}
			})
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	good := Append(nil, sampleHeader(), []byte("payload bytes"))
	mutate := func(f func(b []byte) []byte) []byte {
		return f(bytes.Clone(good))
	}
	cases := []struct {
		name  string
		frame []byte
		max   int
		want  error
	}{
		{"empty", nil, 100, ErrTruncated},
		{"short header", good[:HeaderSize-1], 100, ErrTruncated},
		{"short payload", good[:len(good)-1], 100, ErrTruncated},
		{"trailing bytes", append(bytes.Clone(good), 0), 100, ErrTrailing},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), 100, ErrBadMagic},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\n"), 100, ErrBadMagic},
		{"version 2", mutate(func(b []byte) []byte { b[4] = 2; return b }), 100, ErrVersion},
		{"type 0", mutate(func(b []byte) []byte { b[5] = 0; return b }), 100, ErrType},
		{"type 200", mutate(func(b []byte) []byte { b[5] = 200; return b }), 100, ErrType},
		{"unknown flag", mutate(func(b []byte) []byte { b[7] |= 0x80; return b }), 100, ErrFlags},
		{"over limit", good, 12, ErrTooLarge},
		{"negative limit", good, -1, ErrTooLarge},
		{"header bit flip", mutate(func(b []byte) []byte { b[12] ^= 1; return b }), 100, ErrChecksum},
		{"payload bit flip", mutate(func(b []byte) []byte { b[len(b)-1] ^= 0x10; return b }), 100, ErrChecksum},
		{"crc bit flip", mutate(func(b []byte) []byte { b[crcOffset] ^= 1; return b }), 100, ErrChecksum},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := Decode(c.frame, c.max)
			if !errors.Is(err, c.want) {
				t.Errorf("Decode: got %v, want %v", err, c.want)
			}
			_, _, err = ReadFrame(bytes.NewReader(c.frame), c.max, nil)
			want := c.want
			switch c.name {
			case "empty":
				want = io.EOF // a clean end of stream, not a broken frame
			case "trailing bytes":
				want = nil // on a stream the extra byte is the next frame's start
			}
			if !errors.Is(err, want) {
				t.Errorf("ReadFrame: got %v, want %v", err, want)
			}
		})
	}
}

func TestReadFrameStream(t *testing.T) {
	var stream []byte
	var want [][]byte
	for i := range 20 {
		p := bytes.Repeat([]byte{byte(i)}, i*1000)
		h := sampleHeader()
		h.Micro = uint32(i)
		stream = Append(stream, h, p)
		want = append(want, p)
	}
	// One byte per Read: frames must not depend on how the stream is cut.
	r := iotest.OneByteReader(bytes.NewReader(stream))
	buf := make([]byte, 0, 8000)
	for i, w := range want {
		h, p, err := ReadFrame(r, 1<<20, buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if h.Micro != uint32(i) || !bytes.Equal(p, w) {
			t.Fatalf("frame %d: micro %d, %d bytes; want micro %d, %d bytes", i, h.Micro, len(p), i, len(w))
		}
		if len(p) > 0 && cap(buf) >= len(p) && &p[0] != &buf[:1][0] {
			t.Errorf("frame %d: payload did not reuse the caller's buffer", i)
		}
	}
	if _, _, err := ReadFrame(r, 1<<20, buf); err != io.EOF {
		t.Fatalf("after the last frame: got %v, want io.EOF", err)
	}
}

// A header that claims a 64 MiB payload on a stream that then ends must not
// cost 64 MiB: an attacker would only need to send 30 bytes per connection.
func TestReadFrameLyingLengthAllocatesLittle(t *testing.T) {
	frame := Append(nil, sampleHeader(), make([]byte, 64<<20))
	lie := frame[:HeaderSize+100]
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := ReadFrame(bytes.NewReader(lie), 64<<20, nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("got %v, want ErrTruncated", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 2*readChunk {
		t.Errorf("ReadFrame allocated %d bytes for a frame that ended after 100 payload bytes; want at most %d", got, 2*readChunk)
	}
}

func TestTypeAndFlagsString(t *testing.T) {
	for typ, want := range map[Type]string{TypeUnknown: "unknown", TypeActivation: "activation", TypeTiedGrad: "tied-grad", TypeMetrics: "metrics", 99: "type(99)"} {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
	for f, want := range map[Flags]string{0: "none", FlagLZ4: "lz4", FlagShuffle | FlagLZ4: "shuffle|lz4", 0x81: "shuffle|0x80"} {
		if got := f.String(); got != want {
			t.Errorf("Flags(%#x).String() = %q, want %q", uint8(f), got, want)
		}
	}
}

// fuzzSeeds are valid and broken frames that start every fuzz run.
func fuzzSeeds() [][]byte {
	good := Append(nil, sampleHeader(), []byte("some payload"))
	empty := Append(nil, Header{Type: TypeHeartbeat}, nil)
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 1
	huge := bytes.Clone(empty)
	huge[22], huge[23], huge[24], huge[25] = 0xff, 0xff, 0xff, 0xff
	return [][]byte{good, empty, bad, huge, good[:10], nil, []byte(Magic), append(bytes.Clone(good), empty...)}
}

const fuzzMax = 1 << 16

func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := Decode(b, fuzzMax)
		if err != nil {
			return
		}
		if len(p) > fuzzMax || int(h.Length) != len(p) {
			t.Fatalf("accepted a %d-byte payload (header says %d) with limit %d", len(p), h.Length, fuzzMax)
		}
		// What Decode accepts, Append reproduces exactly.
		if again := Append(nil, h, p); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding a decoded frame changed it")
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s, 0)
		f.Add(s, 64)
	}
	f.Fuzz(func(t *testing.T, b []byte, bufCap int) {
		bufCap = min(max(bufCap, 0), 1<<20)
		buf := make([]byte, 0, bufCap)
		r := bytes.NewReader(b)
		for range 8 { // a stream of frames; stop at the first error
			h, p, err := ReadFrame(r, fuzzMax, buf)
			if err != nil {
				return
			}
			if len(p) > fuzzMax || int(h.Length) != len(p) {
				t.Fatalf("accepted a %d-byte payload (header says %d) with limit %d", len(p), h.Length, fuzzMax)
			}
			if cap(p) > max(fuzzMax, bufCap) {
				t.Fatalf("payload capacity %d over limit %d and buffer %d", cap(p), fuzzMax, bufCap)
			}
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			payload := make([]byte, size)
			buf := make([]byte, 0, HeaderSize+size)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				buf = Append(buf[:0], sampleHeader(), payload)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			frame := Append(nil, sampleHeader(), make([]byte, size))
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, _, err := Decode(frame, size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReadFrame(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			frame := Append(nil, sampleHeader(), make([]byte, size))
			r := bytes.NewReader(frame)
			buf := make([]byte, 0, size)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				r.Reset(frame)
				if _, _, err := ReadFrame(r, size, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
