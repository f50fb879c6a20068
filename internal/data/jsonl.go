package data

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// ErrJSONL is wrapped by every error about a JSON Lines file.
var ErrJSONL = fmt.Errorf("bad JSON Lines")

// readJSONL calls fn with the "text" field of every record of a JSON
// Lines file (one JSON object a line; blank lines are allowed). A line
// that is not a JSON object, or has no string "text", is an error naming
// its line: a corpus that silently loses records trains on less than the
// manifest says, and a truncated download looks exactly like that.
func readJSONL(b []byte, fn func(line int, text []byte)) error {
	var rec struct {
		Text *string `json:"text"`
	}
	for line := 1; len(b) > 0; line++ {
		l := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			l, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		l = bytes.TrimSpace(l)
		if len(l) == 0 {
			continue
		}
		if l[0] != '{' {
			return fmt.Errorf("%d: a line must be a JSON object with a \"text\" field: %w", line, ErrJSONL)
		}
		rec.Text = nil
		if err := json.Unmarshal(l, &rec); err != nil {
			return fmt.Errorf("%d: %v: %w", line, err, ErrJSONL)
		}
		if rec.Text == nil {
			return fmt.Errorf("%d: the record has no \"text\" field (or it is null): %w", line, ErrJSONL)
		}
		fn(line, []byte(*rec.Text))
	}
	return nil
}
