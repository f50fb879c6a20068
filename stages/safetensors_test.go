package stages

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	in := []Tensor{
		{Name: "a", Shape: []int{2, 3}, Data: []float32{1, -2, 3.5, float32(math.Inf(1)), 0, 1e-30}},
		{Name: "b.bias", Shape: []int{1}, Data: []float32{42}},
		{Name: "empty", Shape: []int{0, 4}, Data: nil},
	}
	md := map[string]string{"step": "7"}
	if err := WriteSafetensors(path, in, md); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	hlen := binary.LittleEndian.Uint64(raw)
	if hlen%8 != 0 || !strings.Contains(string(raw[8:8+hlen]), `"dtype":"F32"`) {
		t.Errorf("header %q: want 8-byte padded JSON with dtype F32", raw[8:8+hlen])
	}
	out, gotMD, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	if gotMD["step"] != "7" {
		t.Errorf("metadata %v", gotMD)
	}
	got := map[string]Tensor{}
	for _, x := range out {
		got[x.Name] = x
	}
	for _, w := range in {
		g := got[w.Name]
		if !sameShape(g.Shape, w.Shape) || len(g.Data) != len(w.Data) {
			t.Fatalf("%s: got shape %v len %d, want %v len %d", w.Name, g.Shape, len(g.Data), w.Shape, len(w.Data))
		}
		for i := range w.Data {
			if g.Data[i] != w.Data[i] {
				t.Errorf("%s[%d] = %v, want %v", w.Name, i, g.Data[i], w.Data[i])
			}
		}
	}
	// No temporary files are left next to the checkpoint.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries after an atomic write, want 1", len(ents))
	}
	if err := WriteSafetensors(path, []Tensor{{Name: "a", Shape: []int{3}, Data: []float32{1}}}, nil); err == nil {
		t.Error("shape/data mismatch written")
	}
}

// stFile builds a safetensors image from a raw header and data.
func stFile(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestSafetensorsRejectsBadFiles(t *testing.T) {
	four := make([]byte, 4)
	eight := make([]byte, 8)
	huge := make([]byte, 8)
	binary.LittleEndian.PutUint64(huge, 1<<62)
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"short", []byte{1, 2}, "shorter than"},
		{"huge header length", huge, "header length"},
		{"not json", stFile("{nope", nil), "JSON"},
		{"json array", stFile("[]", nil), "JSON"},
		{"dtype", stFile(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, four), "F16"},
		{"offsets past end", stFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, four), "outside"},
		{"negative offset", stFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, four), "outside"},
		{"shape vs bytes", stFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight), "needs 12 bytes"},
		{"overflowing shape", stFile(`{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}`, four), "shape"},
		{"negative dim", stFile(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, four), "shape"},
		{"overlap", stFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), "overlaps"},
		{"hole", stFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), "hole"},
		{"trailing bytes", stFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, eight), "cover"},
		{"bad metadata", stFile(`{"__metadata__":{"a":1}}`, nil), "metadata"},
		{"unknown field", stFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, four), "bad entry"},
		{"one offset", stFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, four), "data_offsets"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name)
			os.WriteFile(path, c.file, 0o644)
			_, _, err := ReadSafetensors(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v: want one naming the file and containing %q", err, c.want)
			}
			if !errors.Is(err, ErrBadSafetensors) {
				t.Errorf("error %v does not wrap ErrBadSafetensors", err)
			}
		})
	}
}

func FuzzSafetensors(f *testing.F) {
	var buf bytes.Buffer
	path := filepath.Join(f.TempDir(), "seed.safetensors")
	WriteSafetensors(path, []Tensor{{Name: "a", Shape: []int{2}, Data: []float32{1, 2}}, {Name: "b", Shape: []int{1, 1}, Data: []float32{3}}}, map[string]string{"k": "v"})
	seed, _ := os.ReadFile(path)
	f.Add(seed)
	f.Add(stFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)))
	f.Add(stFile(`{}`, nil))
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, _, err := decodeSafetensors(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		// Whatever parses must be consistent: shapes match data, and the
		// data fits in the file.
		total := 0
		for _, x := range ts {
			if prod(x.Shape) != len(x.Data) {
				t.Fatalf("tensor %s shape %v with %d values", x.Name, x.Shape, len(x.Data))
			}
			total += 4 * len(x.Data)
		}
		if total > len(b) {
			t.Fatalf("%d bytes of tensors from a %d-byte file", total, len(b))
		}
	})
}
