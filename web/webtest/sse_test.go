package webtest

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSSEReader(t *testing.T) {
	in := "retry: 2000\n\n: comment\nevent: snapshot\ndata: {\"a\":1}\n\n" +
		"data: line1\r\ndata:line2\r\n\r\n" +
		"event: step\rid: 7\rdata: x\r\r" +
		"event: empty\n\n" +
		"event: last\ndata: y\n\n"
	want := []Event{
		{Name: "snapshot", Data: []byte(`{"a":1}`)},
		{Name: "message", Data: []byte("line1\nline2")},
		{Name: "step", Data: []byte("x"), ID: "7"},
		{Name: "last", Data: []byte("y")},
	}
	// One byte at a time too: a reader must not depend on how TCP splits
	// the stream.
	for name, r := range map[string]io.Reader{"whole": strings.NewReader(in), "bytewise": iotest.OneByteReader(strings.NewReader(in))} {
		t.Run(name, func(t *testing.T) {
			sr := NewSSEReader(r, 0)
			for i, w := range want {
				ev, err := sr.Next()
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if ev.Name != w.Name || !bytes.Equal(ev.Data, w.Data) || ev.ID != w.ID {
					t.Errorf("event %d = %+v, want %+v", i, ev, w)
				}
			}
			if _, err := sr.Next(); err != io.EOF {
				t.Errorf("at end: %v, want io.EOF", err)
			}
		})
	}
}

func TestSSEReaderErrors(t *testing.T) {
	if _, err := NewSSEReader(strings.NewReader("data: cut"), 0).Next(); err != io.ErrUnexpectedEOF {
		t.Errorf("cut stream: %v, want io.ErrUnexpectedEOF", err)
	}
	long := "data: " + strings.Repeat("x", 100) + "\n\n"
	if _, err := NewSSEReader(strings.NewReader(long), 50).Next(); !errors.Is(err, ErrEventTooLong) {
		t.Errorf("long event: %v, want ErrEventTooLong", err)
	}
	many := strings.Repeat("data: xxxxxxxx\n", 20) + "\n"
	if _, err := NewSSEReader(strings.NewReader(many), 50).Next(); !errors.Is(err, ErrEventTooLong) {
		t.Errorf("many data lines: %v, want ErrEventTooLong", err)
	}
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("event: step\ndata: {}\n\n"))
	f.Add([]byte("data: a\r\ndata: b\r\r\n\n"))
	f.Add([]byte(":\n\n\n\rdata\n\n"))
	f.Add([]byte("data: " + strings.Repeat("z", 300) + "\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		const limit = 256
		sr := NewSSEReader(bytes.NewReader(b), limit)
		for range len(b) + 1 {
			ev, err := sr.Next()
			if err != nil {
				return
			}
			if len(ev.Data) > limit {
				t.Fatalf("event of %d bytes passed the %d-byte limit", len(ev.Data), limit)
			}
		}
		t.Fatalf("more events than input bytes")
	})
}
