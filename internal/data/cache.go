package data

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/narrowband/narrowband/internal/metrics"
)

// The token cache is one file per (corpus, tokenizer): a 64-byte header,
// then the training ids, then the held-out ids, little-endian at the
// vocabulary's width (2 or 4 bytes). It is written once, atomically, and
// memory-mapped by every later run, which then starts without encoding
// or holding the corpus. The header:
//
//	0  "NBTOKENS"        magic
//	8  uint32 version    cacheVersion
//	12 uint32 width      bytes per id
//	16 uint64 train      ids
//	24 uint64 val        ids
//	32 uint32 crc32c     of the ids
//	36 [20]byte key      the first 20 bytes of the cache key
//	56 uint32 trainDocs, uint32 valDocs
//
// A file whose header, length or checksum disagrees (a crash mid-write on a
// file system without atomic rename, a truncated copy, a flipped bit) is
// rebuilt, never trusted.
const (
	cacheMagic   = "NBTOKENS"
	cacheVersion = 1
	cacheHeader  = 64
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCache is a token cache file that is not what its name promises.
var ErrCache = errors.New("token cache is corrupt")

// DefaultCacheDir is $XDG_CACHE_HOME/narrowband/tokens (~/.cache/… on
// Linux, the platform's user cache folder elsewhere).
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("data: no user cache folder (%v); set data.cache_dir", err)
	}
	return filepath.Join(d, "narrowband", "tokens"), nil
}

// cacheKey names the cache of a corpus (by its manifest hash) encoded by
// a tokenizer (by its file's hash).
func cacheKey(manifest, tok string) []byte {
	h := sha256.Sum256([]byte(fmt.Sprintf("narrowband tokens v%d\x00%s\x00%s", cacheVersion, manifest, tok)))
	return h[:]
}

// tokenize maps the corpus's ids from the cache, or reads the corpus
// again to encode it and writes the cache. one: the corpus is one
// document, held out by its hash, that trains instead.
func (c *Corpus) tokenize(ctx context.Context, o Options, one bool) error {
	tk := o.Tokenizer
	c.Vocab = tk.VocabSize()
	c.tokenLen = make([]int32, c.Vocab)
	for id := range c.tokenLen {
		c.tokenLen[id] = int32(len(tk.Token(int32(id))))
	}
	m := c.Manifest
	m.Tokenizer = o.TokenizerHash
	w := WidthFor(c.Vocab)
	key := cacheKey(m.Hash, o.TokenizerHash)
	dir := o.CacheDir
	if dir == "" {
		var err error
		if dir, err = DefaultCacheDir(); err != nil {
			c.Warnings = append(c.Warnings, err.Error())
		}
	}
	var path string
	if dir != "" {
		path = filepath.Join(dir, hex.EncodeToString(key[:20])+".tokens")
		train, val, unmap, err := openCache(path, key, w)
		switch {
		case err == nil:
			c.Train, c.Val, c.unmap, c.Cache, c.CacheHit = train, val, unmap, path, true
			return nil
		case !errors.Is(err, os.ErrNotExist):
			c.Warnings = append(c.Warnings, fmt.Sprintf("rebuilding the token cache: %v", err))
		}
	}
	col, m2, err := gather(ctx, o, &collector{mode: encode, ctx: ctx, tk: tk, w: w, limit: o.MaxBytes})
	if err != nil {
		return err
	}
	if m2.hash() != m.Hash {
		return fmt.Errorf("data: %s changed while it was read (its files' hashes differ between two passes); run again", c.Source)
	}
	if one {
		col.onlyToTrain()
	}
	nt, nv := len(col.train)/w, len(col.val)/w
	file := make([]byte, cacheHeader, cacheHeader+len(col.train)+len(col.val))
	file = append(append(file, col.train...), col.val...)
	col.train, col.val = nil, nil
	putHeader(file, key, w, nt, nv, c.TrainDocs, c.ValDocs)
	c.Train = Tokens{raw: file[cacheHeader : cacheHeader+nt*w], width: w}
	c.Val = Tokens{raw: file[cacheHeader+nt*w:], width: w}
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.Warnings = append(c.Warnings, fmt.Sprintf("no token cache (the next run encodes again): %v", err))
		return nil
	}
	if err := metrics.WriteFileAtomic(path, file); err != nil {
		c.Warnings = append(c.Warnings, fmt.Sprintf("no token cache (the next run encodes again): %v", err))
		return nil
	}
	c.Cache = path
	return nil
}

func putHeader(file, key []byte, w, train, val, trainDocs, valDocs int) {
	copy(file, cacheMagic)
	le := binary.LittleEndian
	le.PutUint32(file[8:], cacheVersion)
	le.PutUint32(file[12:], uint32(w))
	le.PutUint64(file[16:], uint64(train))
	le.PutUint64(file[24:], uint64(val))
	le.PutUint32(file[32:], crc32.Checksum(file[cacheHeader:], crcTable))
	copy(file[36:56], key)
	le.PutUint32(file[56:], uint32(trainDocs))
	le.PutUint32(file[60:], uint32(valDocs))
}

// openCache maps a cache file and checks it against key and width.
func openCache(path string, key []byte, w int) (train, val Tokens, unmap func() error, err error) {
	b, unmap, err := mapFile(path)
	if err != nil {
		return Tokens{}, Tokens{}, nil, err
	}
	fail := func(why string) (Tokens, Tokens, func() error, error) {
		unmap()
		return Tokens{}, Tokens{}, nil, fmt.Errorf("%s: %s: %w", path, why, ErrCache)
	}
	if len(b) < cacheHeader || string(b[:8]) != cacheMagic {
		return fail("no header")
	}
	le := binary.LittleEndian
	nt, nv := le.Uint64(b[16:]), le.Uint64(b[24:])
	switch {
	case le.Uint32(b[8:]) != cacheVersion:
		return fail(fmt.Sprintf("version %d, want %d", le.Uint32(b[8:]), cacheVersion))
	case int(le.Uint32(b[12:])) != w:
		return fail(fmt.Sprintf("%d bytes an id, want %d", le.Uint32(b[12:]), w))
	case !bytes.Equal(b[36:56], key[:20]):
		return fail("made for another corpus or tokenizer")
	case nt > uint64(len(b)) || nv > uint64(len(b)) || uint64(len(b)) != cacheHeader+(nt+nv)*uint64(w):
		return fail(fmt.Sprintf("%d bytes, but the header counts %d + %d ids (truncated?)", len(b), nt, nv))
	case crc32.Checksum(b[cacheHeader:], crcTable) != le.Uint32(b[32:]):
		return fail("checksum mismatch")
	}
	split := cacheHeader + int(nt)*w
	return Tokens{raw: b[cacheHeader:split], width: w}, Tokens{raw: b[split:], width: w}, unmap, nil
}

// encodeDocs encodes documents on every core; the ids of each document,
// in order.
func encodeDocs(ctx context.Context, tk interface {
	AppendEncode([]int32, []byte) []int32
}, docs [][]byte) ([][]int32, error) {
	out := make([][]int32, len(docs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = tk.AppendEncode(nil, docs[i])
			}
		}()
	}
	var err error
	for i := range docs {
		if err = ctx.Err(); err != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("data: encoding the corpus: %w", err)
	}
	return out, nil
}
