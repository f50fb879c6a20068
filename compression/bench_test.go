package compression

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// BenchmarkCodec measures every codec on one micro-batch of rows=2048 tokens
// at width d: encode and decode time per token, wire bytes per token (payload
// only; framing adds ~32 bytes per message) and relative Frobenius error
// ‖x̂−x‖/‖x‖ on activation-like data (decaying spectrum over 64 directions +
// 5% noise; see activationLike). The subspace codec is measured on
// h = E0[tok] + U·c, the form the constrained model guarantees.
//
//	go test -run XXX -bench Codec ./compression/
func BenchmarkCodec(b *testing.B) {
	const rows = 2048
	for _, d := range []int{256, 1024} {
		for _, bc := range benchCodecs(d) {
			name := fmt.Sprintf("d=%d/method=%s", d, bc.name)
			b.Run(name+"/op=encode", func(b *testing.B) { benchOne(b, bc, rows, d, true) })
			b.Run(name+"/op=decode", func(b *testing.B) { benchOne(b, bc, rows, d, false) })
		}
	}
}

type benchCodec struct {
	name string
	mk   func() Codec
	lz4  bool
	// warm is the number of calls before measuring the error (lowrank's
	// warm start needs a few to converge).
	warm int
}

func benchCodecs(d int) []benchCodec {
	cs := []benchCodec{
		{name: "none", mk: func() Codec { return None{} }},
		{name: "none/lz4=on", mk: func() Codec { return None{} }, lz4: true},
		{name: "fp16", mk: func() Codec { return Half{FP16} }},
		{name: "fp16/lz4=on", mk: func() Codec { return Half{FP16} }, lz4: true},
		{name: "bf16", mk: func() Codec { return Half{BF16} }},
		{name: "int8/block=64", mk: func() Codec { return Int8Block{BlockSize: 64} }},
		{name: "int8/block=64/lz4=on", mk: func() Codec { return Int8Block{BlockSize: 64} }, lz4: true},
	}
	for _, k := range []float64{0.01, 0.05} {
		cs = append(cs, benchCodec{name: fmt.Sprintf("topk/k=%g", k), mk: func() Codec {
			return &TopK{Frac: k, Precision: FP16}
		}})
	}
	for _, r := range []int{8, 16, 32, 64} {
		cs = append(cs, benchCodec{name: fmt.Sprintf("lowrank/rank=%d", r), warm: 4, mk: func() Codec {
			return &LowRank{Rank: r, Iters: 1, Precision: FP16, Seed: 1}
		}})
	}
	cs = append(cs, benchCodec{name: "lowrank/rank=32/iters=2", warm: 4, mk: func() Codec {
		return &LowRank{Rank: 32, Iters: 2, Precision: FP16, Seed: 1}
	}})
	// Subspace: fp16 at three ranks, then ~31 B/token at every integer
	// precision (k=26 int8, 38 int6, 56 int4, 74 int3, 112 int2: fewer bits
	// buy a larger k), and the smaller int4/int8 ranks of the sweep.
	for _, kp := range []struct {
		k int
		p Precision
	}{{16, FP16}, {32, FP16}, {64, FP16}, {16, Int8}, {26, Int8}, {38, Int6}, {32, Int4}, {56, Int4}, {74, Int3}, {112, Int2}} {
		cs = append(cs, benchCodec{name: fmt.Sprintf("subspace/rank=%d/prec=%v", kp.k, kp.p), mk: func() Codec {
			s, err := NewSubspace(1, d, kp.k, 256, kp.p)
			if err != nil {
				panic(err)
			}
			s.LZ4Tokens = true
			return s
		}})
	}
	return cs
}

var benchData sync.Map // d → []float32

func benchInput(rows, d int) []float32 {
	if v, ok := benchData.Load(d); ok {
		return v.([]float32)
	}
	x := activationLike(77, rows, d)
	benchData.Store(d, x)
	return x
}

// subspaceInput builds h = E0[tok] + U·c with byte-level token ids taken
// from real Go source (the project's default training data), so the lz4
// gain on the token stream is realistic.
func subspaceInput(s *Subspace, rows int) ([]float32, []int32) {
	d, k := s.Basis.D, s.Basis.K
	toks := make([]int32, rows)
	text, err := os.ReadFile(filepath.Join(runtime.GOROOT(), "src", "fmt", "print.go"))
	if err != nil || len(text) < 4*rows {
		text = []byte("func (s *Subspace) Encode(dst []byte, g []float32, rows, cols int) ([]byte, error) {\n")
	} else {
		text = text[len(text)/2:] // past the licence header
	}
	for i := range toks {
		toks[i] = int32(text[i%len(text)])
	}
	c := gaussian(5, rows*k, 1)
	h := make([]float32, rows*d)
	s.Basis.Expand(h, c, rows)
	for i, t := range toks {
		for j := 0; j < d; j++ {
			h[i*d+j] += s.E0[int(t)*d+j]
		}
	}
	return h, toks
}

func benchOne(b *testing.B, bc benchCodec, rows, d int, encode bool) {
	c := bc.mk()
	x := benchInput(rows, d)
	var toks []int32
	sub, isSub := c.(*Subspace)
	if isSub {
		x, toks = subspaceInput(sub, rows)
	}
	var packed []byte
	enc := func(dst []byte) ([]byte, bool) {
		var p []byte
		var err error
		if isSub {
			p, err = sub.EncodeWithTokens(dst, x, toks, rows, d)
		} else {
			p, err = c.Encode(dst, x, rows, d)
		}
		if err != nil {
			b.Fatal(err)
		}
		if bc.lz4 {
			var applied bool
			packed, applied = Compress(packed[:0], p, ShuffleWidth(c, FP16))
			return packed, applied
		}
		return p, false
	}
	y := make([]float32, rows*d)
	gotToks := make([]int32, rows)
	var unpacked []byte
	dec := func(p []byte, applied bool) {
		var err error
		if applied {
			unpacked, err = Decompress(unpacked[:0], p, c.MaxEncodedLen(rows, d))
			p = unpacked
			if err != nil {
				b.Fatal(err)
			}
		}
		if isSub {
			err = sub.DecodeWithTokens(y, gotToks, p, rows, d)
		} else {
			err = c.Decode(y, p, rows, d)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	// Error and size outside the timer, on a warmed-up codec.
	var p []byte
	var applied bool
	for i := 0; i <= bc.warm; i++ {
		p, applied = enc(nil)
	}
	dec(p, applied)
	re := relErr(y, x)

	b.ReportAllocs()
	b.SetBytes(int64(4 * rows * d))
	buf := make([]byte, 0, c.MaxEncodedLen(rows, d))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if encode {
			buf, _ = enc(buf[:0])
		} else {
			dec(p, applied)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(rows), "ns/token")
	b.ReportMetric(float64(len(p))/float64(rows), "wireB/token")
	b.ReportMetric(re, "relerr")
}

// BenchmarkSubspaceTC measures the transform codec against today's subspace
// k=48 int4 on one micro-batch of 512 tokens (experiments/compression.toml's
// 4×128) at d=256: encode and decode time per token, payload bytes per
// token and relative error of the coefficients, on tcStream's structured
// coefficients after 32 warm-up messages (so the predictor and rotation are
// in their steady state; refreshes, every 16 messages, are amortized in the
// encode time). Decode restores the receiver's state outside the timer
// before each call. Bytes and error are the mean of 32 further messages.
//
//	go test -run XXX -bench SubspaceTC ./compression/
func BenchmarkSubspaceTC(b *testing.B) {
	const d, rows, vocab = 256, 512, 256
	for _, bc := range []struct {
		name string
		k    int
		rot  Rotation
		tc   bool
	}{
		{"subspace/rank=48/prec=int4", 48, 0, false},
		{"subspace-tc/rank=48/rotation=derived", 48, RotationDerived, true},
		{"subspace-tc/rank=96/rotation=derived", 96, RotationDerived, true},
		{"subspace-tc/rank=96/rotation=sent", 96, RotationSent, true},
	} {
		for _, op := range []string{"encode", "decode"} {
			b.Run(fmt.Sprintf("d=%d/method=%s/op=%s", d, bc.name, op), func(b *testing.B) {
				s := newTCStream(b, d, bc.k, vocab)
				h, ids, _ := s.next(rows)
				out := make([]float32, rows*d)
				gotIDs := make([]int32, rows)
				var p []byte
				if !bc.tc {
					sub, _ := NewSubspace(5, d, bc.k, vocab, Int4)
					sub.LZ4Tokens = true
					p, _ = sub.EncodeWithTokens(nil, h, ids, rows, d)
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if op == "encode" {
							p, _ = sub.EncodeWithTokens(p[:0], h, ids, rows, d)
						} else if err := sub.DecodeWithTokens(out, gotIDs, p, rows, d); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					_ = sub.DecodeWithTokens(out, gotIDs, p, rows, d)
				} else {
					o := DefaultTCOptions()
					o.Rotation, o.SendIDs = bc.rot, true
					enc, dec := tcPair(b, s.sub, DirForward, o)
					for m := 0; m < 32; m++ {
						h, ids, _ = s.next(rows)
						p, _ = enc.Encode(nil, h, ids, rows, d)
						if err := dec.Decode(out, gotIDs, p, rows, d); err != nil {
							b.Fatal(err)
						}
					}
					h, ids, _ = s.next(rows)
					snapE, snapD := enc.Snapshot(), dec.Snapshot()
					p, _ = enc.Encode(nil, h, ids, rows, d)
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if op == "encode" {
							p, _ = enc.Encode(p[:0], h, ids, rows, d)
							continue
						}
						b.StopTimer()
						if err := dec.Restore(snapD); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
						if err := dec.Decode(out, gotIDs, p, rows, d); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					// Size and error over 32 messages from the warm state
					// (two rotation refreshes: a sent one costs 2k² bytes).
					_ = enc.Restore(snapE)
					_ = dec.Restore(snapD)
					var nb int
					var re float64
					for m := 0; m < 32; m++ {
						p, _ = enc.Encode(p[:0], h, ids, rows, d)
						if err := dec.Decode(out, gotIDs, p, rows, d); err != nil {
							b.Fatal(err)
						}
						nb += len(p)
						re += relErr(out, h) / 32
						h, ids, _ = s.next(rows)
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(rows), "ns/token")
					b.ReportMetric(float64(nb)/32/float64(rows), "wireB/token")
					b.ReportMetric(re, "relerr")
					return
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(rows), "ns/token")
				b.ReportMetric(float64(len(p))/float64(rows), "wireB/token")
				b.ReportMetric(relErr(out, h), "relerr")
			})
		}
	}
}
