package compression

import (
	"bytes"
	"errors"
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
	for _, p := range []Precision{FP32, FP16, Int8, Int6, Int4, Int3, Int2} {
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

// FuzzRoundTrip feeds arbitrary float32 matrices (NaN, Inf, subnormals,
// any shape) through every codec: encoding either fails cleanly or produces
// a payload the decoder accepts, and the lossless and int8 codecs keep
// their promises.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 128, 127, 1, 0, 0, 0}, uint8(2), uint8(4))
	f.Add(bytes.Repeat([]byte{0x3f, 0x80, 0, 0}, 64), uint8(8), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, rows uint8, method uint8) {
		m := Method(int(method)%int(MethodSubspace) + 1)
		rows = max(rows%16, 1)
		n := len(data) / 4
		cols := n / int(rows)
		if cols == 0 {
			return
		}
		x := make([]float32, int(rows)*cols)
		for i := range x {
			x[i] = math.Float32frombits(uint32(data[4*i]) | uint32(data[4*i+1])<<8 | uint32(data[4*i+2])<<16 | uint32(data[4*i+3])<<24)
		}
		cfg := DefaultConfig()
		cfg.Method, cfg.Rank, cfg.LZ4, cfg.BlockSize = m, Rank(min(4, cols)), true, 8
		l, err := NewLink(cfg, cols, 256, 1)
		if err != nil {
			t.Fatal(err)
		}
		p, applied, err := l.Encode(nil, x, int(rows), cols)
		if err != nil {
			return // e.g. ErrNonFinite for a quantizing codec
		}
		y := make([]float32, len(x))
		if err := l.Decode(y, p, applied, int(rows), cols); err != nil {
			t.Fatalf("%v: decoder rejects the encoder's payload: %v", m, err)
		}
		switch m {
		case MethodNone:
			for i := range x {
				if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
					t.Fatalf("none: element %d %v → %v", i, x[i], y[i])
				}
			}
		case MethodInt8:
			for b := 0; b < len(x); b += 8 {
				blk := x[b:min(b+8, len(x))]
				var amax float64
				for _, v := range blk {
					amax = max(amax, math.Abs(float64(v)))
				}
				for i := range blk {
					if e := math.Abs(float64(y[b+i]) - float64(blk[i])); e > amax/254*(1+1e-5)+1e-38 {
						t.Fatalf("int8: element %d error %g > absmax/254 = %g", b+i, e, amax/254)
					}
				}
			}
		}
	})
}

// The transform codec's decoder holds state, so hostile payloads are tried
// against both a fresh receiver and one warmed up by honest messages (its
// rotation, predictor and id model non-trivial), restored from a snapshot
// for every input. The seeds are the next honest payloads, whose state
// checksum matches, so mutations reach the models and the rANS stream.
// Whatever is accepted decodes to finite values and in-vocabulary ids; a
// refused payload leaves the state as it was.
func FuzzDecodeSubspaceTC(f *testing.F) {
	const d, k, vocab, warm = 16, 6, 40, 3
	type setup struct {
		dec  *TCDecoder
		snap [2][]byte // cold, warm
	}
	var setups []setup
	for v := 0; v < 8; v++ {
		dir := []Direction{DirForward, DirBackward}[v&1]
		o := DefaultTCOptions()
		o.Rotation = []Rotation{RotationDerived, RotationSent}[v>>1&1]
		o.SendIDs = v>>2&1 == 1
		o.RotationInterval = 2
		s := newTCStream(f, d, k, vocab)
		enc, dec := tcPair(f, s.sub, dir, o)
		su := setup{dec: dec}
		su.snap[0] = dec.Snapshot()
		for m := 0; m <= warm; m++ {
			rows := []int{1, 7, 33, 64}[m]
			if m == warm {
				su.snap[1] = dec.Snapshot()
			}
			h, ids, _ := s.next(rows)
			p, err := enc.Encode(nil, h, ids, rows, d)
			if err != nil {
				f.Fatal(err)
			}
			if m == 0 || m == warm {
				f.Add(p, uint8(rows), uint8(v), m == warm)
			}
			out := make([]float32, rows*d)
			if err := dec.Decode(out, ids, p, rows, d); err != nil {
				f.Fatal(err)
			}
		}
		setups = append(setups, su)
	}
	f.Fuzz(func(t *testing.T, payload []byte, rows, v uint8, warmed bool) {
		su := setups[int(v)%len(setups)]
		w := 0
		if warmed {
			w = 1
		}
		if err := su.dec.Restore(su.snap[w]); err != nil {
			t.Fatal(err)
		}
		sum := su.dec.Checksum()
		out := make([]float32, int(rows)*d)
		ids := make([]int32, rows)
		for i := range ids {
			ids[i] = int32(i % vocab)
		}
		if err := su.dec.Decode(out, ids, payload, int(rows), d); err != nil {
			if su.dec.Checksum() != sum {
				t.Fatalf("refused payload (%v) changed the state", err)
			}
			return
		}
		if len(payload) > su.dec.MaxEncodedLen(int(rows), d) {
			t.Fatalf("accepted a %d-byte payload above MaxEncodedLen %d", len(payload), su.dec.MaxEncodedLen(int(rows), d))
		}
		for i, x := range out {
			if !isFinite32(x) {
				t.Fatalf("accepted payload decodes to %v at %d", x, i)
			}
		}
		for i, x := range ids {
			if x < 0 || x >= vocab {
				t.Fatalf("row %d: accepted id %d outside vocab %d", i, x, vocab)
			}
		}
		// The state moved on: the same payload again is a desync.
		if err := su.dec.Decode(out, ids, payload, int(rows), d); !errors.Is(err, ErrDesync) {
			t.Fatalf("the same payload twice: %v, want ErrDesync", err)
		}
	})
}

// FuzzDecodeReduceChunk: a chunk of the replicas' gradient sum, from a peer
// ([compression.replicas]): hostile bytes give an error or, for the lossy
// methods, finite values, never a panic; an accepted fp16 or float32 chunk
// has exactly the length ReduceChunkLen says.
func FuzzDecodeReduceChunk(f *testing.F) {
	for _, m := range []ReduceMethod{ReduceNone, ReduceFP16, ReduceInt8} {
		for _, n := range []int{1, 7, 200} {
			x := gaussian(uint64(n), n, 0.01)
			p, err := AppendReduceChunk(nil, x, make([]float32, n), m)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(p, uint8(n), uint8(m))
		}
	}
	f.Add([]byte{0x38, 0xff, 0x00, 0x7c}, uint8(1), uint8(ReduceFP16))
	f.Add([]byte{0x01, 0xff, 0xff, 0x7f, 0x7f, 0x7f}, uint8(1), uint8(ReduceInt8))
	f.Fuzz(func(t *testing.T, payload []byte, n, method uint8) {
		m := ReduceMethod(method%4 + 1)
		dst := make([]float32, n)
		if err := DecodeReduceChunk(dst, payload, m); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v: error %v does not wrap ErrCorrupt", m, err)
			}
			return
		}
		if m != ReduceInt8 && len(payload) != ReduceChunkLen(int(n), m) {
			t.Fatalf("%v: accepted %d bytes for %d values, ReduceChunkLen says %d", m, len(payload), n, ReduceChunkLen(int(n), m))
		}
		if m.Lossy() {
			for i, v := range dst {
				if !isFinite32(v) {
					t.Fatalf("%v: accepted payload decodes to %v at %d", m, v, i)
				}
			}
		}
	})
}
