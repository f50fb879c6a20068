package identity

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestKeyIsMadeOnceAndKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cfg", "narrowband", "peer.key")
	k, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first use: created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	again, created, err := LoadOrCreate(path)
	if err != nil || created || again.Public() != k.Public() {
		t.Fatalf("second use: created %v, same key %v, %v", created, again.Public() == k.Public(), err)
	}
	os.WriteFile(path, []byte("not a key"), 0o600)
	if _, _, err := LoadOrCreate(path); !errors.Is(err, ErrBadKey) {
		t.Errorf("a damaged key file: %v, want ErrBadKey (and no silent replacement)", err)
	}
}

func TestJoinProof(t *testing.T) {
	k, _ := New()
	other, _ := New()
	ch := Challenge()
	proof := k.Prove("run-1", "peer-a", ch)
	if err := Check(k.Public(), "run-1", "peer-a", ch, proof); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"another key":       Check(other.Public(), "run-1", "peer-a", ch, proof),
		"another room":      Check(k.Public(), "run-2", "peer-a", ch, proof),
		"another peer name": Check(k.Public(), "run-1", "peer-b", ch, proof),
		"another challenge": Check(k.Public(), "run-1", "peer-a", Challenge(), proof),
		"a malformed key":   Check(Public("ABCD"), "run-1", "peer-a", ch, proof),
		"an uppercase key":  Check(Public(string(k.Public())[:2]+"X"+string(k.Public())[3:]), "run-1", "peer-a", ch, proof),
	} {
		if !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: %v, want ErrBadKey", name, err)
		}
	}
}
