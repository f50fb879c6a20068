package data

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/narrowband/narrowband/internal/tokenizer"
)

// Corpus is the text of a run as token ids, split into training and
// held-out streams.
type Corpus struct {
	Source     string // where it came from, for logs
	Train, Val Tokens
	// TrainDocs and ValDocs count documents (files, or JSON Lines records)
	// on each side of the split.
	TrainDocs, ValDocs int
	// Vocab is the number of ids: 256 for bytes, else the tokenizer's.
	Vocab int
	// Manifest lists what was read; the run writes it as manifest.json.
	Manifest *Manifest
	// Cache is the token cache file of a tokenized corpus ("" for bytes,
	// or when it could not be written: Warnings say why); CacheHit says
	// whether it was read rather than built.
	Cache    string
	CacheHit bool
	Warnings []string

	tokenLen []int32 // bytes of each id's text; nil: one byte each
	unmap    func() error
}

// TokenBytes is the length of id's text in bytes: what one predicted id
// covers of the held-out text, for the loss per byte.
func (c *Corpus) TokenBytes(id int32) int {
	if c.tokenLen == nil {
		return 1
	}
	if id < 0 || int(id) >= len(c.tokenLen) {
		return 0
	}
	return int(c.tokenLen[id])
}

// Close releases the token cache's mapping; the streams must not be used
// afterwards.
func (c *Corpus) Close() error {
	if c.unmap == nil {
		return nil
	}
	f := c.unmap
	c.unmap = nil
	c.Train, c.Val = Tokens{}, Tokens{}
	return f()
}

// ErrEmpty means the corpus has no usable text.
var ErrEmpty = errors.New("corpus is empty")

// ErrBinary is a file that is not text (it holds a NUL byte).
var ErrBinary = errors.New("not a text file")

// GoRoot returns the Go installation whose src folder is the default corpus.
func GoRoot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if s := strings.TrimSpace(string(out)); s != "" {
			return s
		}
	}
	return runtime.GOROOT()
}

// Options say where the text is and how it becomes ids.
type Options struct {
	// Paths are files, folders and globs ("corpus/**/*.md"); nil means
	// the Go standard library's source ($(go env GOROOT)/src, non-test .go
	// files outside testdata).
	Paths       []string
	ValFraction float64  // share of documents held out
	Extensions  []string // keep only these endings; nil = ".go" for the default, all otherwise
	// Include and Exclude are patterns for files found in folders and by
	// globs (a file named in Paths is always read): without a slash a
	// pattern matches the base name, with one the path below the folder,
	// "**" any number of folders. Exclude also prunes folders.
	Include, Exclude []string
	// MinTokens is the fewest ids each split must hold (block_size+1).
	MinTokens int
	// MaxBytes bounds the text read (0: no bound): a corpus larger than
	// this is refused, by the sizes of its files, before any is read. A
	// tokenized corpus is never held as text: the bound applies to the ids
	// held while encoding it, and not to ids mapped from the cache.
	MaxBytes int64
	// Tokenizer, if set, encodes the text (nil: one id per byte), and
	// TokenizerHash (the sha256 of its file) keys the token cache.
	Tokenizer     *tokenizer.Tokenizer
	TokenizerHash string
	// CacheDir holds the token caches; "" is DefaultCacheDir.
	CacheDir string
}

// ErrTooLarge is a corpus over Options.MaxBytes.
var ErrTooLarge = errors.New("corpus is larger than the limit")

// splitRule names the held-out rule in the manifest; a change of the
// rule must change it (it keys the token cache).
const splitRule = "fnv64a(file path below its folder) for text files, fnv64a(text) for JSON Lines records; one document: its tail"

// Load reads the corpus. Only regular files are read (a device or a named
// pipe would be read forever); ctx stops it between chunks.
//
// Every document (a text file, or one record of a .jsonl file) goes
// wholly to training or to the held-out side by a stable hash: a file by
// its path below the folder it was found in (as the corpus always was
// split), a JSON Lines record by its text, so duplicates land on one
// side and re-sharding the files moves nothing. When the held-out side
// is shorter than MinTokens (too few documents, or one), the tail of the
// training stream is held out instead. Documents are concatenated as they
// are, without a separator, in byte and tokenized runs alike, so the
// loss per byte compares them on the same text.
//
// A tokenized corpus is read twice at most: once to hash every file (the
// manifest, which keys the token cache), and, only when the cache misses,
// again to encode it in batches of documents. Neither pass holds the text
// whole, so a corpus larger than memory trains from its mapped ids.
func Load(ctx context.Context, o Options) (*Corpus, error) {
	mode := keepText
	if o.Tokenizer != nil {
		mode = hashOnly
	}
	col, m, err := gather(ctx, o, &collector{mode: mode})
	if err != nil {
		return nil, err
	}
	c := &Corpus{Source: strings.Join(m.Sources, ", "), Manifest: m, Vocab: 256}
	m.Hash = m.hash()
	one := m.Documents == 1 && m.ValDocuments == 1
	if one {
		m.onlyToTrain() // one document: it trains, and its tail is held out
		col.onlyToTrain()
	}
	c.TrainDocs, c.ValDocs = m.TrainDocuments, m.ValDocuments
	if o.Tokenizer == nil {
		c.Train, c.Val = Bytes(col.train), Bytes(col.val)
	} else if err := c.tokenize(ctx, o, one); err != nil {
		return nil, err
	}
	if err := c.holdOutTail(o); err != nil {
		c.Close()
		return nil, err
	}
	m.TrainTokens, m.ValTokens = int64(c.Train.Len()), int64(c.Val.Len())
	return c, nil
}

// Documents reads the documents of o's sources as Load does (the same
// files, JSON Lines records, filters and split), without encoding them:
// what a tokenizer is trained on. With ValFraction > 0 only the training
// side's, so the tokenizer never sees the held-out text.
func Documents(ctx context.Context, o Options) ([][]byte, *Manifest, error) {
	col, m, err := gather(ctx, o, &collector{mode: keepDocs})
	if err != nil {
		return nil, nil, err
	}
	m.Hash = m.hash()
	if len(col.trainDocs) == 0 { // one document, held out by its hash
		return col.valDocs, m, nil
	}
	return col.trainDocs, m, nil
}

// HeldOutDocuments is the held-out side of Documents' split: what a
// tokenizer trained on the training side is measured on.
func HeldOutDocuments(ctx context.Context, o Options) ([][]byte, error) {
	col, _, err := gather(ctx, o, &collector{mode: keepDocs})
	if err != nil {
		return nil, err
	}
	return col.valDocs, nil
}

// gather lists and reads the sources into col and the manifest.
func gather(ctx context.Context, o Options, col *collector) (*collector, *Manifest, error) {
	sources, f := o.Paths, filters{exts: o.Extensions, include: o.Include, exclude: o.Exclude}
	if len(sources) == 0 {
		src := filepath.Join(GoRoot(), "src")
		if _, err := os.Stat(src); err != nil {
			return nil, nil, fmt.Errorf("data: the default corpus is the Go standard library's source, but %s is missing (%v); set data.path to a text file or folder", src, err)
		}
		sources, f.goSrc = []string{src}, true
		if f.exts == nil {
			f.exts = []string{".go"}
		}
	}
	if err := checkPatterns("data.include", o.Include); err != nil {
		return nil, nil, err
	}
	if err := checkPatterns("data.exclude", o.Exclude); err != nil {
		return nil, nil, err
	}
	m := &Manifest{Version: 1, Sources: sources, ValFraction: o.ValFraction, Split: splitRule, Tokenizer: "bytes"}
	files, err := list(sources, f, &m.Skipped)
	if err != nil {
		return nil, nil, err
	}
	source := strings.Join(sources, ", ")
	var total int64
	for _, x := range files {
		total += x.size
	}
	if col.mode == keepText || col.mode == keepDocs {
		// Held whole: bounded by its size (an encoding pass bounds its ids).
		if err := o.bound(source, total); err != nil {
			return nil, nil, err
		}
	}
	for _, x := range files {
		if err := col.read(ctx, x, o.ValFraction, m); err != nil {
			return nil, nil, err
		}
	}
	if err := col.flush(); err != nil {
		return nil, nil, err
	}
	if m.Documents == 0 {
		return nil, nil, fmt.Errorf("data: %s: no text (%d files matched, extensions %v%s): %w", source, len(files), f.exts, m.skippedNote(), ErrEmpty)
	}
	return col, m, nil
}

// holdOutTail moves the tail of the training stream to the held-out side
// when the split by document left it shorter than MinTokens.
func (c *Corpus) holdOutTail(o Options) error {
	if c.Train.Len() < o.MinTokens || c.TrainDocs == 0 {
		return fmt.Errorf("data: %s: no training text (%d tokens in %d documents): %w", c.Source, c.Train.Len(), c.TrainDocs, ErrEmpty)
	}
	if c.Val.Len() >= o.MinTokens {
		return nil
	}
	n := max(int(float64(c.Train.Len())*o.ValFraction), o.MinTokens)
	if c.Train.Len()-n < o.MinTokens {
		return fmt.Errorf("data: %s: %d tokens is too little to train and hold out (need %d, 2 × block_size+1): %w", c.Source, c.Train.Len(), 2*o.MinTokens, ErrEmpty)
	}
	tail := c.Train.Slice(c.Train.Len()-n, c.Train.Len())
	c.Val = c.Val.Append(tail)
	c.Train = c.Train.Slice(0, c.Train.Len()-n)
	c.Manifest.HeldOutTail = int64(n)
	return nil
}

// collectMode is what a collector keeps of the documents it is given.
type collectMode int

const (
	keepText collectMode = iota // a byte run: the text is the ids
	keepDocs                    // each document (to train a tokenizer on)
	hashOnly                    // nothing: the pass that makes the manifest
	encode                      // the ids, encoded in batches of documents
)

// encodeBatch is how much text an encoding pass holds at once.
const encodeBatch = 16 << 20

// collector gathers the documents of each side of the split.
type collector struct {
	mode               collectMode
	train, val         []byte   // keepText: text; encode: ids, little-endian at width w
	trainDocs, valDocs [][]byte // keepDocs

	// encode: the tokenizer, the id width, the bound on the ids held
	// (Options.MaxBytes, 0: none), and the documents waiting.
	ctx     context.Context
	tk      interface{ AppendEncode([]int32, []byte) []int32 }
	w       int
	limit   int64
	pending [][]byte
	sides   []bool
	held    int
}

func (col *collector) add(doc []byte, val bool) error {
	switch col.mode {
	case keepDocs:
		if val {
			col.valDocs = append(col.valDocs, doc)
		} else {
			col.trainDocs = append(col.trainDocs, doc)
		}
	case keepText:
		if val {
			col.val = append(col.val, doc...)
		} else {
			col.train = append(col.train, doc...)
		}
	case encode:
		col.pending, col.sides = append(col.pending, doc), append(col.sides, val)
		if col.held += len(doc); col.held >= encodeBatch {
			return col.flush()
		}
	}
	return nil
}

// flush encodes the documents waiting (each on its own: a pre-token never
// spans two) and appends their ids in order.
func (col *collector) flush() error {
	if col.mode != encode || len(col.pending) == 0 {
		return nil
	}
	ids, err := encodeDocs(col.ctx, col.tk, col.pending)
	if err != nil {
		return err
	}
	for i, x := range ids {
		n := len(x) * col.w
		dst := &col.train
		if col.sides[i] {
			dst = &col.val
		}
		*dst = append(*dst, make([]byte, n)...)
		putIDs((*dst)[len(*dst)-n:], x, col.w)
	}
	col.pending, col.sides, col.held = col.pending[:0], col.sides[:0], 0
	if held := int64(len(col.train) + len(col.val)); col.limit > 0 && held > col.limit {
		return fmt.Errorf("data: the corpus's token ids pass %.2f GB, more than the limit of %.2f GB (data.max_bytes, or the memory this machine has available): %w", float64(held)/1e9, float64(col.limit)/1e9, ErrTooLarge)
	}
	return nil
}

// onlyToTrain moves the corpus's one document, held out by its hash, to
// the training side.
func (col *collector) onlyToTrain() {
	col.train, col.val = append(col.train, col.val...), nil
	col.trainDocs, col.valDocs = append(col.trainDocs, col.valDocs...), nil
}

// onlyToTrain counts the corpus's one document as training.
func (m *Manifest) onlyToTrain() {
	m.TrainDocuments, m.ValDocuments = 1, 0
	m.TrainBytes, m.ValBytes = m.TrainBytes+m.ValBytes, 0
	for i := range m.Files {
		m.Files[i].ValDocuments = 0
	}
}

// read reads one file into the collector and the manifest.
func (col *collector) read(ctx context.Context, x file, frac float64, m *Manifest) error {
	b, err := readFile(ctx, x.path, x.size)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("data: %w", ctx.Err())
		}
		return fmt.Errorf("data: %w (remove it, or leave it out with data.exclude)", err)
	}
	sum := sha256.Sum256(b)
	mf := ManifestFile{Path: x.path, Name: x.name, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:]), Format: formatOf(x.name)}
	var addErr error
	side := func(doc []byte, val bool) {
		if err := col.add(doc, val); err != nil && addErr == nil {
			addErr = err
		}
		mf.Documents++
		m.Documents++
		if val {
			mf.ValDocuments++
			m.ValDocuments++
			m.ValBytes += int64(len(doc))
		} else {
			m.TrainDocuments++
			m.TrainBytes += int64(len(doc))
		}
	}
	switch mf.Format {
	case "jsonl":
		err := readJSONL(b, func(line int, text []byte) {
			if len(text) > 0 {
				side(text, isVal(string(text), frac))
			}
		})
		if err != nil {
			return fmt.Errorf("data: %s:%w", x.path, err)
		}
	default:
		if i := bytes.IndexByte(b, 0); i >= 0 {
			if x.named {
				return fmt.Errorf("data: %s has a NUL byte at offset %d: %w; give text files, or JSON Lines (.jsonl) with a \"text\" field", x.path, i, ErrBinary)
			}
			m.Skipped = append(m.Skipped, Skipped{Path: x.path, Reason: fmt.Sprintf("binary: a NUL byte at offset %d", i)})
			return nil
		}
		if len(b) == 0 {
			break // an empty file is no document
		}
		side(b, isVal(x.name, frac))
	}
	m.Files = append(m.Files, mf)
	return addErr
}

// bound refuses a corpus of size bytes over MaxBytes.
func (o Options) bound(path string, size int64) error {
	if o.MaxBytes > 0 && size > o.MaxBytes {
		return fmt.Errorf("data: %s holds %.2f GB of text, more than the limit of %.2f GB (data.max_bytes, or the memory this machine has available): %w", path, float64(size)/1e9, float64(o.MaxBytes)/1e9, ErrTooLarge)
	}
	return nil
}

// readFile reads a regular file of (at most) size bytes in chunks, checking
// ctx between them; a file that grew while being read is cut at size.
func readFile(ctx context.Context, path string, size int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const chunk = 4 << 20
	b := make([]byte, 0, size)
	for int64(len(b)) < size {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(int64(chunk), size-int64(len(b)))
		k, err := io.ReadFull(f, b[len(b):len(b)+int(n)])
		b = b[:len(b)+k]
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break // it shrank
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// ReadText reads a text file for evaluation: a regular file of at most
// maxBytes, stoppable through ctx.
func ReadText(ctx context.Context, path string, maxBytes int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %s, not a regular file (it would be read forever); give a text file", path, fileKind(st.Mode()))
	}
	if maxBytes > 0 && st.Size() > maxBytes {
		return nil, fmt.Errorf("%s has %.2f GB, more than the %.2f GB this command reads: %w", path, float64(st.Size())/1e9, float64(maxBytes)/1e9, ErrTooLarge)
	}
	return readFile(ctx, path, st.Size())
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	}
	return "special file"
}

// isVal is the split of one document: a stable hash of its key (a file's
// path below its folder, a record's text).
func isVal(key string, frac float64) bool {
	h := fnv.New64a()
	io.WriteString(h, key)
	return float64(h.Sum64()%1_000_000) < frac*1_000_000
}
