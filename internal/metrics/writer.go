package metrics

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// JSONL appends records to metrics.jsonl, one JSON object per line, flushed
// after every record so a crash loses at most the record being written.
type JSONL struct {
	f *os.File
	w *bufio.Writer
}

// CreateJSONL opens path for writing from scratch.
func CreateJSONL(path string) (*JSONL, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &JSONL{f: f, w: bufio.NewWriter(f)}, nil
}

// ResumeJSONL keeps the records of path up to and including step keep (and
// events before them) and appends after them: the lines of steps a crashed run
// had done after its last checkpoint are dropped, since the resumed run
// does them again. The truncation is atomic.
func ResumeJSONL(path string, keep int) (*JSONL, error) {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	var kept bytes.Buffer
	for _, line := range bytes.Split(old, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var probe struct {
			Step int `json:"step"`
		}
		if json.Unmarshal(line, &probe) != nil || probe.Step > keep {
			break
		}
		kept.Write(line)
		kept.WriteByte('\n')
	}
	if err := WriteFileAtomic(path, kept.Bytes()); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &JSONL{f: f, w: bufio.NewWriter(f)}, nil
}

// Write appends one record.
func (j *JSONL) Write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	j.w.Write(b)
	j.w.WriteByte('\n')
	return j.w.Flush()
}

// Close flushes and closes the file.
func (j *JSONL) Close() error {
	if err := j.w.Flush(); err != nil {
		j.f.Close()
		return err
	}
	return j.f.Close()
}

// WriteJSON writes v as indented JSON to path atomically.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return WriteFileAtomic(path, append(b, '\n'))
}

// WriteFileAtomic writes data to path so that path holds either its old
// content or all of data, whatever happens: temp file in the same folder,
// fsync, rename, fsync of the folder.
func WriteFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Losses reads a run's metrics.jsonl and returns its loss curve: each
// step's training loss, followed by its held-out loss on steps that
// evaluated. Two runs that trained alike have equal curves, which is what
// the equivalence tests compare.
func Losses(path string) ([]float64, error) {
	recs, err := ReadJSONL(path)
	if err != nil {
		return nil, err
	}
	var out []float64
	for _, r := range recs {
		out = append(out, r.Loss)
		if r.ValLoss != nil {
			out = append(out, *r.ValLoss)
		}
	}
	return out, nil
}

// ReadJSONL reads the step records of a metrics.jsonl file (other event
// lines are skipped). After a rollback (a stage changed hands and the
// pipeline went back to a snapshot) the file holds the abandoned steps
// and then their redone records; the redone ones replace them here, so the
// result is the history the model actually has.
func ReadJSONL(path string) ([]StepRecord, error) {
	var out []StepRecord
	err := readLines(path, func(line []byte) error {
		var r StepRecord
		if err := json.Unmarshal(line, &r); err != nil {
			return err
		}
		if r.Type == "" || r.Type == "step" {
			for len(out) > 0 && out[len(out)-1].Step >= r.Step {
				out = out[:len(out)-1]
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// ReadEvents reads the event lines of a metrics.jsonl file.
func ReadEvents(path string) ([]Event, error) {
	var out []Event
	err := readLines(path, func(line []byte) error {
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return err
		}
		if e.Type == "event" {
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// readLines calls fn with each non-blank line of a JSONL file; an error
// names the file and line.
func readLines(path string, fn func(line []byte) error) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for i, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
	}
	return nil
}
