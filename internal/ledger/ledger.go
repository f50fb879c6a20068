// Package ledger is a run's record of who trained what: an append-only
// file (ledger.jsonl in the run folder) of entries, each hash-chained to
// the one before it and signed by the run's coordinator, so that the record
// cannot be changed, reordered or cut short without Verify noticing.
//
// Each line is one entry: its JSON payload, one space, and the lowercase
// hex ed25519 signature of the payload's SHA-256, then a newline:
//
//	{"seq":0,"prev":"","kind":"open",…} 3f9a…\n
//	{"seq":1,"prev":"<sha256 of line 0's payload>","kind":"step","step":1,"work":[…]} 8c21…\n
//
// The hash covers the payload's exact bytes, so every byte of the file is
// checked: the payload by the hash and the signature, the signature by
// itself, the separators by the parser. The first entry ("open") names the
// coordinator's key, which signs every entry; "step" entries say which key
// computed which stage and micro-batches, with tokens, bytes sent and spot
// checks; "fault" entries record a key found faulty.
package ledger

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/narrowband/narrowband/internal/identity"
)

// File is the ledger's name in a run folder.
const File = "ledger.jsonl"

// Entry kinds.
const (
	KindOpen  = "open"  // the run begins (or resumes): the coordinator's key and the run's hashes
	KindStep  = "step"  // an optimizer step's work, by key
	KindFault = "fault" // a key found faulty (a spot check failed), and why
)

// Entry is one record. Fields not of its kind are empty.
type Entry struct {
	Seq  int    `json:"seq"`
	Prev string `json:"prev"` // SHA-256 of the previous entry's payload, hex; "" for the first
	Kind string `json:"kind"`
	Time string `json:"time,omitempty"` // RFC 3339, when the coordinator wrote it

	// open
	Run         string          `json:"run,omitempty"`
	Coordinator identity.Public `json:"coordinator,omitempty"`
	ConfigHash  string          `json:"config_sha256,omitempty"`
	DataHash    string          `json:"data_sha256,omitempty"`
	Code        string          `json:"code,omitempty"`
	FromStep    int             `json:"from_step,omitempty"` // a resumed run's first step

	// step
	Step int    `json:"step,omitempty"`
	Work []Work `json:"work,omitempty"`

	// fault (Work: the faulty key's checks in the attempt it was caught in)
	Key    identity.Public `json:"key,omitempty"`
	Reason string          `json:"reason,omitempty"`
}

// Work is what one key did in one step.
type Work struct {
	Stage        int             `json:"stage"`
	Peer         string          `json:"peer"`
	Key          identity.Public `json:"key"`
	Micro        []int           `json:"micro"` // the micro-batches it computed
	Tokens       int64           `json:"tokens"`
	BytesSent    int64           `json:"bytes_sent"`
	ChecksPassed int             `json:"checks_passed,omitempty"`
	ChecksFailed int             `json:"checks_failed,omitempty"`
}

// ErrBroken is a ledger that does not verify: a changed, reordered,
// missing or added byte, a bad signature, a broken chain.
var ErrBroken = errors.New("ledger: the record does not verify")

// Writer appends to a ledger.
type Writer struct {
	f    *os.File
	key  *identity.Key
	seq  int
	head string
}

// Open appends to the ledger at path, creating it. An existing ledger is
// verified first and must be signed by key: a resumed run continues its
// own record. open is written as the next entry (its Coordinator set to
// key's).
func Open(path string, key *identity.Key, open Entry) (*Writer, error) {
	w := &Writer{key: key}
	if b, err := os.ReadFile(path); err == nil {
		entries, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w (move it away to start a new record)", path, err)
		}
		if c := entries[0].Coordinator; c != key.Public() {
			return nil, fmt.Errorf("%w: %s is signed by coordinator %s, this run's key is %s", ErrBroken, path, c.Short(), key.Public().Short())
		}
		last := entries[len(entries)-1]
		w.seq, w.head = last.Seq+1, last.hash
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	w.f = f
	open.Kind, open.Coordinator = KindOpen, key.Public()
	if err := w.Append(open); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// Append signs e as the next entry and writes it durably (fsync).
func (w *Writer) Append(e Entry) error {
	e.Seq, e.Prev = w.seq, w.head
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	sum := sha256.Sum256(payload)
	line := append(append(payload, ' '), hex.EncodeToString(w.key.Sign(sum[:]))...)
	line = append(line, '\n')
	if _, err := w.f.Write(line); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	w.seq, w.head = w.seq+1, hex.EncodeToString(sum[:])
	return nil
}

// Head is the hash of the latest entry: what a checkpoint names.
func (w *Writer) Head() string { return w.head }

// Close closes the file.
func (w *Writer) Close() error { return w.f.Close() }

// parsed is an entry with its payload's hash.
type parsed struct {
	Entry
	hash string
}

// Parse checks a whole ledger — every line's form, every signature with the
// first entry's coordinator key, the chain and the numbering — and returns
// its entries. Any byte changed, added or removed fails it.
func Parse(b []byte) ([]parsed, error) {
	var out []parsed
	var coord identity.Public
	prev := ""
	r := bufio.NewReader(bytes.NewReader(b))
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			if len(line) != 0 {
				return nil, fmt.Errorf("%w: line %d has no newline at its end (cut short?)", ErrBroken, n)
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBroken, err)
		}
		line = line[:len(line)-1]
		sp := bytes.LastIndexByte(line, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("%w: line %d has no signature", ErrBroken, n)
		}
		payload, sigHex := line[:sp], string(line[sp+1:])
		if strings.ToLower(sigHex) != sigHex {
			return nil, fmt.Errorf("%w: line %d: the signature is not lowercase hex", ErrBroken, n)
		}
		sig, err := hex.DecodeString(sigHex)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: the signature is not hex: %v", ErrBroken, n, err)
		}
		var e Entry
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil || dec.More() {
			return nil, fmt.Errorf("%w: line %d: the entry is not one JSON object of the ledger's fields: %v", ErrBroken, n, err)
		}
		if canon, _ := json.Marshal(e); !bytes.Equal(canon, payload) {
			return nil, fmt.Errorf("%w: line %d: the entry is not in the form the coordinator writes", ErrBroken, n)
		}
		if n == 1 {
			if e.Kind != KindOpen {
				return nil, fmt.Errorf("%w: line 1 is a %q entry; a ledger starts with %q", ErrBroken, e.Kind, KindOpen)
			}
			coord = e.Coordinator
		} else if e.Kind == KindOpen && e.Coordinator != coord {
			return nil, fmt.Errorf("%w: line %d: the run reopened with another coordinator key %s", ErrBroken, n, e.Coordinator.Short())
		}
		sum := sha256.Sum256(payload)
		if err := coord.Verify(sum[:], sig); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBroken, n, err)
		}
		if e.Seq != n-1 || e.Prev != prev {
			return nil, fmt.Errorf("%w: line %d: entry %d after %d, chained to %q, want %q", ErrBroken, n, e.Seq, n-2, short(e.Prev), short(prev))
		}
		prev = hex.EncodeToString(sum[:])
		out = append(out, parsed{Entry: e, hash: prev})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: the ledger is empty", ErrBroken)
	}
	return out, nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}

// Share is one key's part of a run's work.
type Share struct {
	Key          identity.Public
	Peers        []string // the names it used
	Stages       []int
	Steps        int // steps it worked in
	Micro        int // micro-batches computed, summed over stages
	Tokens       int64
	BytesSent    int64
	ChecksPassed int
	ChecksFailed int
	Faults       []string
	// Fraction of the run's micro-batch computations.
	Fraction float64
}

// Report is a verified ledger's summary.
type Report struct {
	Run         string
	Coordinator identity.Public
	Entries     int
	Steps       int // step entries
	Opens       int // starts and resumes
	Head        string
	Shares      []Share // by micro-batches, most first
}

// Verify reads and checks the ledger at path, and sums each key's share.
// A ledger cut at a line boundary is still a valid chain; VerifyAnchored
// also checks it against the heads the run recorded elsewhere.
func Verify(path string) (Report, error) { return VerifyAnchored(path, "", nil) }

// VerifyAnchored is Verify, and also requires the chain to end at head
// (if not "": the head a finished run wrote into its summary) and to hold
// every hash in within (the heads its checkpoints name), so that a ledger
// cut short or replaced by another valid one is refused too.
func VerifyAnchored(path, head string, within []string) (Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Report{}, fmt.Errorf("ledger: %w", err)
	}
	es, err := Parse(b)
	if err != nil {
		return Report{}, fmt.Errorf("%s: %w", path, err)
	}
	if last := es[len(es)-1].hash; head != "" && last != head {
		return Report{}, fmt.Errorf("%w: %s ends at %s but the run recorded %s as its last entry (cut short, or written after?)", ErrBroken, path, short(last), short(head))
	}
	for _, h := range within {
		found := false
		for _, e := range es {
			found = found || e.hash == h
		}
		if !found {
			return Report{}, fmt.Errorf("%w: %s does not hold entry %s, which a checkpoint of the run names", ErrBroken, path, short(h))
		}
	}
	rep := Report{Run: es[0].Run, Coordinator: es[0].Coordinator, Entries: len(es), Head: es[len(es)-1].hash}
	byKey := map[identity.Public]*Share{}
	get := func(k identity.Public) *Share {
		if byKey[k] == nil {
			byKey[k] = &Share{Key: k}
		}
		return byKey[k]
	}
	total := 0
	for _, e := range es {
		switch e.Kind {
		case KindOpen:
			rep.Opens++
		case KindStep:
			rep.Steps++
			seen := map[identity.Public]bool{}
			for _, w := range e.Work {
				s := get(w.Key)
				if !contains(s.Peers, w.Peer) {
					s.Peers = append(s.Peers, w.Peer)
				}
				if !containsInt(s.Stages, w.Stage) {
					s.Stages = append(s.Stages, w.Stage)
				}
				if !seen[w.Key] {
					seen[w.Key] = true
					s.Steps++
				}
				s.Micro += len(w.Micro)
				s.Tokens += w.Tokens
				s.BytesSent += w.BytesSent
				s.ChecksPassed += w.ChecksPassed
				s.ChecksFailed += w.ChecksFailed
				total += len(w.Micro)
			}
		case KindFault:
			s := get(e.Key)
			s.Faults = append(s.Faults, e.Reason)
			// The checks of the attempt it was caught in (no work: that
			// attempt was redone without it).
			for _, w := range e.Work {
				c := get(w.Key)
				c.ChecksPassed += w.ChecksPassed
				c.ChecksFailed += w.ChecksFailed
			}
		}
	}
	for _, s := range byKey {
		if total > 0 {
			s.Fraction = float64(s.Micro) / float64(total)
		}
		sort.Ints(s.Stages)
		rep.Shares = append(rep.Shares, *s)
	}
	sort.Slice(rep.Shares, func(i, j int) bool {
		if rep.Shares[i].Micro != rep.Shares[j].Micro {
			return rep.Shares[i].Micro > rep.Shares[j].Micro
		}
		return rep.Shares[i].Key < rep.Shares[j].Key
	})
	return rep, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
