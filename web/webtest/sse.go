package webtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Event is one server-sent event.
type Event struct {
	Name string // the "event:" field; "message" when absent
	Data []byte // the "data:" lines joined with '\n'
	ID   string
}

// ErrEventTooLong is returned when an event exceeds the reader's limit.
var ErrEventTooLong = errors.New("webtest: server-sent event longer than the limit; raise the limit of NewSSEReader")

// SSEReader parses a text/event-stream as the HTML standard describes:
// lines end in \n, \r\n or \r; a blank line ends an event; lines starting
// with ':' are comments; an event with no data is not dispatched.
type SSEReader struct {
	r     *bufio.Reader
	limit int
}

// NewSSEReader reads events from r; limit bounds the size of one event
// (and so the memory a hostile stream can make it hold).
func NewSSEReader(r io.Reader, limit int) *SSEReader {
	if limit <= 0 {
		limit = 64 << 20
	}
	return &SSEReader{r: bufio.NewReaderSize(r, 64<<10), limit: limit}
}

// readLine returns one line without its terminator.
func (s *SSEReader) readLine(budget int) ([]byte, error) {
	var line []byte
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				return line, io.ErrUnexpectedEOF
			}
			return line, err
		}
		switch b {
		case '\n':
			return line, nil
		case '\r':
			if nb, err := s.r.Peek(1); err == nil && nb[0] == '\n' {
				_, _ = s.r.ReadByte()
			}
			return line, nil
		}
		if len(line) >= budget {
			return nil, ErrEventTooLong
		}
		line = append(line, b)
	}
}

// Next returns the next event. At the end of the stream it returns io.EOF;
// a stream cut inside an event gives io.ErrUnexpectedEOF.
func (s *SSEReader) Next() (Event, error) {
	var ev Event
	var data []byte
	hasData := false
	size := 0
	for {
		line, err := s.readLine(s.limit - size)
		if err != nil {
			if err == io.EOF && (hasData || size > 0) {
				err = io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		size += len(line) + 1
		if size > s.limit {
			return Event{}, ErrEventTooLong
		}
		if len(line) == 0 {
			if !hasData {
				ev = Event{}
				continue
			}
			if ev.Name == "" {
				ev.Name = "message"
			}
			ev.Data = data
			return ev, nil
		}
		if line[0] == ':' {
			continue
		}
		field, value, found := bytes.Cut(line, []byte(":"))
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(field) {
		case "event":
			ev.Name = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "id":
			ev.ID = string(value)
		case "retry":
			// Reconnection delay: a Go reader has no use for it.
		default:
			// The standard says to ignore unknown fields.
		}
	}
}

func (e Event) String() string { return fmt.Sprintf("%s (%d bytes)", e.Name, len(e.Data)) }
