package compression

import (
	"bytes"
	"math"
	"testing"
)

// Every decoder of network bytes is fuzzed: hostile payloads and shapes must
// give an error or a finite reconstruction, never a panic or a huge
// allocation. The seeds (valid payloads of each codec) run in plain go test.

type fuzzShape struct{ rows, cols int }

var fuzzShapes = []fuzzShape{{1, 1}, {3, 5}, {8, 16}, {16, 16}}

func addSeeds(f *testing.F, c Codec) {
	for _, s := range fuzzShapes {
		x := activationLike(uint64(s.rows), s.rows, s.cols)
		p, err := c.Encode(nil, x, s.rows, s.cols)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p, uint8(s.rows), uint8(s.cols))
	}
	f.Add([]byte{}, uint8(0), uint8(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, uint8(4), uint8(4))
}

func fuzzDecode(f *testing.F, mk func() Codec, finite bool) {
	addSeeds(f, mk())
	f.Fuzz(func(t *testing.T, payload []byte, rows, cols uint8) {
		c := mk()
		dst := make([]float32, int(rows)*int(cols))
		if err := c.Decode(dst, payload, int(rows), int(cols)); err != nil {
			return
		}
		if len(payload) > c.MaxEncodedLen(int(rows), int(cols)) {
			t.Fatalf("accepted a %d-byte payload above MaxEncodedLen %d", len(payload), c.MaxEncodedLen(int(rows), int(cols)))
		}
		if finite {
			for i, v := range dst {
				if math.IsNaN(float64(v)) {
					t.Fatalf("accepted payload decodes to NaN at %d", i)
				}
			}
		}
	})
}

func FuzzDecodeNone(f *testing.F) {
	addSeeds(f, None{})
	f.Fuzz(func(t *testing.T, payload []byte, rows, cols uint8) {
		dst := make([]float32, int(rows)*int(cols))
		if err := (None{}).Decode(dst, payload, int(rows), int(cols)); err != nil {
			return
		}
		// Lossless: re-encoding gives back the same bytes.
		back, err := None{}.Encode(nil, dst, int(rows), int(cols))
		if err != nil || !bytes.Equal(back, payload) {
			t.Fatalf("none is not bit-exact: %v", err)
		}
	})
}

func FuzzDecodeFP16(f *testing.F) { fuzzDecode(f, func() Codec { return Half{FP16} }, false) }
func FuzzDecodeBF16(f *testing.F) { fuzzDecode(f, func() Codec { return Half{BF16} }, false) }
func FuzzDecodeInt8(f *testing.F) {
	fuzzDecode(f, func() Codec { return Int8Block{BlockSize: 8} }, true)
}
func FuzzDecodeTopK(f *testing.F) {
	fuzzDecode(f, func() Codec { return &TopK{Frac: 0.2, Precision: FP16, Feedback: true} }, true)
}
func FuzzDecodeLowRank(f *testing.F) {
	fuzzDecode(f, func() Codec { return &LowRank{Rank: 3, Iters: 1, Precision: FP16, Seed: 1} }, false)
}

// The subspace decoder's width is fixed by its basis; cols is ignored by the
// fuzz shape and forced to D (other widths are rejected up front anyway).
func FuzzDecodeSubspace(f *testing.F) {
	const d = 16
	mk := func(p Precision, vocab int) *Subspace {
		s, err := NewSubspace(1, d, 4, vocab, p)
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	for _, p := range []Precision{FP32, FP16, Int8} {
		for _, vocab := range []int{256, 1000} {
			s := mk(p, vocab)
			s.LZ4Tokens = true
			for _, rows := range []int{1, 5, 64} {
				h := activationLike(3, rows, d)
				toks := make([]int32, rows)
				for i := range toks {
					toks[i] = int32(i % 3)
				}
				pf, err := s.EncodeWithTokens(nil, h, toks, rows, d)
				if err != nil {
					f.Fatal(err)
				}
				pb, _ := s.Encode(nil, h, rows, d)
				f.Add(pf, uint8(rows), vocab > 256)
				f.Add(pb, uint8(rows), vocab > 256)
			}
		}
	}
	small, big := mk(FP16, 256), mk(FP16, 1000)
	f.Fuzz(func(t *testing.T, payload []byte, rows uint8, bigVocab bool) {
		s := small
		if bigVocab {
			s = big
		}
		h := make([]float32, int(rows)*d)
		toks := make([]int32, rows)
		if err := s.DecodeWithTokens(h, toks, payload, int(rows), d); err == nil {
			for i, tk := range toks {
				if tk < 0 || int(tk) >= s.Vocab {
					t.Fatalf("row %d: accepted token %d outside vocab %d", i, tk, s.Vocab)
				}
			}
			for i, v := range h {
				if math.IsNaN(float64(v)) {
					t.Fatalf("accepted forward payload decodes to NaN at %d", i)
				}
			}
		}
		if err := s.Decode(h, payload, int(rows), d); err == nil {
			for i, v := range h {
				if math.IsNaN(float64(v)) {
					t.Fatalf("accepted backward payload decodes to NaN at %d", i)
				}
			}
		}
	})
}

func FuzzDecompress(f *testing.F) {
	for _, es := range []int{1, 2, 4} {
		p, _ := Compress(nil, bytes.Repeat([]byte("narrowband "), 50), es)
		f.Add(p, uint16(600))
	}
	f.Add([]byte{4, 0xff, 0xff, 0xff, 0xff, 0x0f, 0}, uint16(100))
	f.Fuzz(func(t *testing.T, packed []byte, maxLen uint16) {
		out, err := Decompress(nil, packed, int(maxLen))
		if err == nil && len(out) > int(maxLen) {
			t.Fatalf("decompressed %d bytes above maxLen %d", len(out), maxLen)
		}
	})
}
