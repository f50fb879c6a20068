// Package identity gives each peer (and each run's coordinator) a key pair
// that names it: an ed25519 key created on first use and kept in the user's
// config folder (or a file given with --key), whose public half is the
// peer's name in every record (the run's contribution ledger, the allow-list
// of keys a run admits). A peer proves it holds its key by signing a
// challenge the coordinator sends when it connects (Prove, Check).
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Key is a peer's key pair.
type Key struct {
	priv ed25519.PrivateKey
}

// Public is a peer's public key, in the hex form records name it by.
type Public string

// ErrBadKey is a key file, public key or signature that does not parse or
// verify.
var ErrBadKey = errors.New("identity: bad key")

const pemType = "NARROWBAND ED25519 PRIVATE KEY"

// DefaultPath is where a peer's key lives unless --key says otherwise:
// $XDG_CONFIG_HOME/narrowband/peer.key, or ~/.config/narrowband/peer.key.
func DefaultPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("identity: no config folder for the peer's key (%v); give one with --key FILE", err)
	}
	return filepath.Join(dir, "narrowband", "peer.key"), nil
}

// New makes a fresh key.
func New() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &Key{priv: priv}, nil
}

// LoadOrCreate reads the key at path, creating it (mode 0600, and its
// folder) if there is none. created says it was made now.
func LoadOrCreate(path string) (k *Key, created bool, err error) {
	k, err = Load(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	if k, err = New(); err != nil {
		return nil, false, err
	}
	if err := k.Save(path); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// Load reads a key file Save wrote.
func Load(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != pemType || len(blk.Bytes) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: %s is not a narrowband key file (want a PEM block %q of %d bytes); move it away and a new key is made", ErrBadKey, path, pemType, ed25519.SeedSize)
	}
	return &Key{priv: ed25519.NewKeyFromSeed(blk.Bytes)}, nil
}

// Save writes the key to path atomically, readable by its owner only.
func (k *Key) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".peer.key.tmp*")
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: pemType, Bytes: k.priv.Seed()}); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// Public is the key's public half.
func (k *Key) Public() Public {
	return Public(hex.EncodeToString(k.priv.Public().(ed25519.PublicKey)))
}

// Sign signs msg.
func (k *Key) Sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

// Short is the first 16 hex digits, for logs and tables.
func (p Public) Short() string {
	if len(p) > 16 {
		return string(p[:16])
	}
	return string(p)
}

// Bytes checks p is a well-formed public key (64 lowercase hex digits) and
// returns it.
func (p Public) Bytes() (ed25519.PublicKey, error) {
	if len(p) != 2*ed25519.PublicKeySize || strings.ToLower(string(p)) != string(p) {
		return nil, fmt.Errorf("%w: public key %q: want %d lowercase hex digits", ErrBadKey, p, 2*ed25519.PublicKeySize)
	}
	b, err := hex.DecodeString(string(p))
	if err != nil {
		return nil, fmt.Errorf("%w: public key %q: %v", ErrBadKey, p, err)
	}
	return ed25519.PublicKey(b), nil
}

// Verify checks sig is p's signature of msg.
func (p Public) Verify(msg, sig []byte) error {
	pub, err := p.Bytes()
	if err != nil {
		return err
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, msg, sig) {
		return fmt.Errorf("%w: the signature does not verify with key %s", ErrBadKey, p.Short())
	}
	return nil
}

// joinMessage is what a peer signs to join: the run's room, its name there
// and the coordinator's fresh challenge, so a signature proves the key
// holder asked to join this run now.
func joinMessage(room, peer string, challenge []byte) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "narrowband join\x00%s\x00%s\x00", room, peer)
	h.Write(challenge)
	return h.Sum(nil)
}

// Prove signs a join of peer to room answering challenge.
func (k *Key) Prove(room, peer string, challenge []byte) []byte {
	return k.Sign(joinMessage(room, peer, challenge))
}

// Check verifies a join proof.
func Check(pub Public, room, peer string, challenge, proof []byte) error {
	return pub.Verify(joinMessage(room, peer, challenge), proof)
}

// Challenge is a fresh random challenge.
func Challenge() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}
