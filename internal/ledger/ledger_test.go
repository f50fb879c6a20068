package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/narrowband/narrowband/internal/identity"
)

// smallLedger writes an open entry, three steps by two keys and a fault.
func smallLedger(t *testing.T) (string, *identity.Key, []identity.Public) {
	t.Helper()
	coord, _ := identity.New()
	a, _ := identity.New()
	b, _ := identity.New()
	path := filepath.Join(t.TempDir(), File)
	w, err := Open(path, coord, Entry{Run: "tiny", ConfigHash: "c0ffee", Code: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for s := 1; s <= 3; s++ {
		if err := w.Append(Entry{Kind: KindStep, Step: s, Work: []Work{
			{Stage: 0, Peer: "peer-0", Key: a.Public(), Micro: []int{0, 1}, Tokens: 64, BytesSent: 1000},
			{Stage: 1, Peer: "peer-1", Key: b.Public(), Micro: []int{0, 1}, Tokens: 64, BytesSent: 900, ChecksPassed: 1},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Append(Entry{Kind: KindFault, Key: b.Public(), Reason: "spot check of step 3 micro 1 differs"}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return path, coord, []identity.Public{a.Public(), b.Public()}
}

func TestVerifyCountsEachKeysShare(t *testing.T) {
	path, coord, keys := smallLedger(t)
	rep, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Coordinator != coord.Public() || rep.Steps != 3 || rep.Entries != 5 || len(rep.Shares) != 2 {
		t.Fatalf("report %+v", rep)
	}
	for _, s := range rep.Shares {
		if s.Micro != 6 || s.Fraction != 0.5 || s.Steps != 3 {
			t.Errorf("share %+v: want 6 micro-batches over 3 steps, half the work", s)
		}
		if s.Key == keys[1] && (len(s.Faults) != 1 || s.ChecksPassed != 3) {
			t.Errorf("the faulty key's share %+v", s)
		}
	}
}

// TestAnyChangedByteIsRefused flips every byte of a small ledger in turn;
// Verify refuses each version. Dropping, swapping or adding lines, or
// cutting the file short, is refused too.
func TestAnyChangedByteIsRefused(t *testing.T) {
	path, _, _ := smallLedger(t)
	orig, _ := os.ReadFile(path)
	bad := filepath.Join(t.TempDir(), File)
	try := func(what string, b []byte) {
		t.Helper()
		os.WriteFile(bad, b, 0o644)
		if _, err := Verify(bad); !errors.Is(err, ErrBroken) {
			t.Errorf("%s: %v, want ErrBroken", what, err)
		}
	}
	for i := range orig {
		for _, mask := range []byte{0x01, 0x20, 0x80} {
			b := bytes.Clone(orig)
			b[i] ^= mask
			try(fmt.Sprintf("byte %d ^ %#x", i, mask), b)
		}
	}
	lines := bytes.SplitAfter(orig, []byte("\n"))
	lines = lines[:len(lines)-1] // the empty tail after the last newline
	// A ledger cut at a line boundary is a valid chain by itself; the
	// head the run recorded catches it.
	os.WriteFile(bad, bytes.Join(lines[:len(lines)-1], nil), 0o644)
	rep, _ := Verify(path)
	if _, err := VerifyAnchored(bad, rep.Head, nil); !errors.Is(err, ErrBroken) {
		t.Errorf("the last line dropped, against the recorded head: %v", err)
	}
	if _, err := VerifyAnchored(path, rep.Head, []string{rep.Head}); err != nil {
		t.Errorf("the whole ledger against its own head: %v", err)
	}
	try("a middle line dropped", bytes.Join(append(append([][]byte{}, lines[:2]...), lines[3:]...), nil))
	try("two lines swapped", bytes.Join([][]byte{lines[0], lines[2], lines[1], lines[3], lines[4]}, nil))
	try("a line repeated", append(bytes.Clone(orig), lines[2]...))
	try("cut short", orig[:len(orig)-1])
	try("junk appended", append(bytes.Clone(orig), "x"...))
	try("empty", nil)
	t.Logf("%d bytes, each flipped three ways: all refused", len(orig))
}

// TestResumeContinuesTheRecord: a resumed run appends to its ledger with
// the same key; another key may not.
func TestResumeContinuesTheRecord(t *testing.T) {
	path, coord, _ := smallLedger(t)
	w, err := Open(path, coord, Entry{Run: "tiny", FromStep: 2})
	if err != nil {
		t.Fatal(err)
	}
	w.Append(Entry{Kind: KindStep, Step: 3})
	w.Close()
	rep, err := Verify(path)
	if err != nil || rep.Opens != 2 || rep.Entries != 7 {
		t.Fatalf("after a resume: %+v %v", rep, err)
	}
	other, _ := identity.New()
	if _, err := Open(path, other, Entry{Run: "tiny"}); !errors.Is(err, ErrBroken) {
		t.Errorf("another coordinator continued the record: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	path, _, _ := smallLedger(&testing.T{})
	b, _ := os.ReadFile(path)
	f.Add(b)
	f.Add([]byte("{} 00\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		Parse(b) // never panics
	})
}
