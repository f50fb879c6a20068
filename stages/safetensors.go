package stages

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Tensor is a named float32 array with a shape, as stored in a checkpoint.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// maxHeaderLen bounds the JSON header a reader accepts (the safetensors
// library's own limit is 100 MB), so a hostile length cannot make us
// allocate gigabytes before looking at the data.
const maxHeaderLen = 100 << 20

// ErrBadSafetensors is wrapped by every error about a malformed file.
var ErrBadSafetensors = errors.New("not a valid safetensors file")

type stEntry struct {
	Dtype       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// WriteSafetensors writes tensors (F32, little-endian) and metadata to path
// in the safetensors format, atomically: a temporary file in the same
// directory is written, fsynced and renamed over path, then the directory
// is fsynced, so a crash leaves either the old file or the new one.
func WriteSafetensors(path string, tensors []Tensor, metadata map[string]string) (err error) {
	header := make(map[string]any, len(tensors)+1)
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	for _, t := range tensors {
		if t.Name == "" || t.Name == "__metadata__" {
			return fmt.Errorf("write %s: tensor name %q is not allowed", path, t.Name)
		}
		if _, dup := header[t.Name]; dup {
			return fmt.Errorf("write %s: tensor %s given twice", path, t.Name)
		}
		n := 1
		shape := make([]int64, len(t.Shape))
		for i, d := range t.Shape {
			n *= d
			shape[i] = int64(d)
		}
		if n != len(t.Data) {
			return fmt.Errorf("write %s: tensor %s has shape %v (%d values) but %d values of data", path, t.Name, t.Shape, n, len(t.Data))
		}
		header[t.Name] = stEntry{Dtype: "F32", Shape: shape, DataOffsets: []int64{off, off + 4*int64(n)}}
		off += 4 * int64(n)
	}
	hdr, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("write %s: encode header: %w", path, err)
	}
	// Pad with spaces to 8 bytes so the data is aligned, as the reference
	// implementation does.
	for len(hdr)%8 != 0 {
		hdr = append(hdr, ' ')
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	w.Write(lenBuf[:])
	w.Write(hdr)
	var b [4]byte
	for _, t := range tensors {
		for _, x := range t.Data {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
			w.Write(b[:])
		}
	}
	if err = w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: rename into place: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		derr = d.Sync()
		d.Close()
		if derr != nil {
			return fmt.Errorf("write %s: sync directory: %w", path, derr)
		}
	}
	return nil
}

// ReadSafetensors reads a safetensors file of F32 tensors, checking the
// header length, the JSON, dtypes, shapes against byte lengths, and that
// the tensors exactly tile the data section without overlap. Tensors come
// back in file order. Errors name the file and the problem and wrap
// ErrBadSafetensors when the content is malformed.
func ReadSafetensors(path string) ([]Tensor, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoint: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoint %s: %w", path, err)
	}
	ts, md, err := decodeSafetensors(f, st.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoint %s: %w", path, err)
	}
	return ts, md, nil
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadSafetensors, fmt.Sprintf(format, args...))
}

// decodeSafetensors parses a safetensors image of size bytes from r.
// Nothing is allocated beyond the header (≤ maxHeaderLen) and tensors whose
// extent has been checked against size.
func decodeSafetensors(r io.ReaderAt, size int64) ([]Tensor, map[string]string, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, nil, bad("file is %d bytes, shorter than the 8-byte header length", size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, nil, fmt.Errorf("read header length: %w", err)
	}
	hlen := binary.LittleEndian.Uint64(lenBuf[:])
	if hlen > maxHeaderLen || int64(hlen) > size-8 {
		return nil, nil, bad("header length %d exceeds the file (%d bytes) or the %d-byte limit", hlen, size, maxHeaderLen)
	}
	hdr := make([]byte, hlen)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, nil, fmt.Errorf("read header: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, nil, bad("header is not a JSON object: %v", err)
	}
	dataStart := 8 + int64(hlen)
	dataLen := size - dataStart
	var md map[string]string
	type located struct {
		name       string
		shape      []int
		begin, end int64
	}
	var list []located
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &md); err != nil {
				return nil, nil, bad("__metadata__ is not a map of strings: %v", err)
			}
			continue
		}
		var e stEntry
		dec := json.NewDecoder(strings.NewReader(string(msg)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, nil, bad("tensor %q: bad entry: %v", name, err)
		}
		if e.Dtype != "F32" {
			return nil, nil, bad("tensor %q has dtype %q: only F32 is supported (convert the checkpoint to float32)", name, e.Dtype)
		}
		if len(e.DataOffsets) != 2 {
			return nil, nil, bad("tensor %q: data_offsets has %d numbers, want 2", name, len(e.DataOffsets))
		}
		b, en := e.DataOffsets[0], e.DataOffsets[1]
		if b < 0 || en < b || en > dataLen {
			return nil, nil, bad("tensor %q: data_offsets [%d, %d] outside the %d-byte data section", name, b, en, dataLen)
		}
		n := int64(1)
		shape := make([]int, len(e.Shape))
		for i, d := range e.Shape {
			if d < 0 || (d > 0 && n > dataLen/d) {
				return nil, nil, bad("tensor %q: shape %v is negative or larger than the file", name, e.Shape)
			}
			n *= d
			shape[i] = int(d)
		}
		if 4*n != en-b {
			return nil, nil, bad("tensor %q: shape %v needs %d bytes of F32 but data_offsets span %d", name, e.Shape, 4*n, en-b)
		}
		list = append(list, located{name, shape, b, en})
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].begin != list[j].begin {
			return list[i].begin < list[j].begin
		}
		return list[i].end < list[j].end
	})
	var pos int64
	for _, l := range list {
		if l.begin != pos {
			if l.begin < pos {
				return nil, nil, bad("tensor %q overlaps the previous tensor (starts at %d, previous ends at %d)", l.name, l.begin, pos)
			}
			return nil, nil, bad("hole in the data section before tensor %q (bytes %d..%d belong to no tensor)", l.name, pos, l.begin)
		}
		pos = l.end
	}
	if pos != dataLen {
		return nil, nil, bad("data section is %d bytes but tensors cover %d", dataLen, pos)
	}
	out := make([]Tensor, len(list))
	buf := make([]byte, min(1<<16, dataLen))
	for i, l := range list {
		data := make([]float32, (l.end-l.begin)/4)
		for k := 0; k < len(data); {
			n := min(len(buf)/4, len(data)-k)
			if _, err := r.ReadAt(buf[:4*n], dataStart+l.begin+4*int64(k)); err != nil {
				return nil, nil, fmt.Errorf("read tensor %q: %w", l.name, err)
			}
			for j := 0; j < n; j++ {
				data[k+j] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*j:]))
			}
			k += n
		}
		out[i] = Tensor{Name: l.name, Shape: l.shape, Data: data}
	}
	return out, md, nil
}
