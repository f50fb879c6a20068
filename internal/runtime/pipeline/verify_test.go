package pipeline

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/narrowband/narrowband/compression"
)

// TestCheckCatchesAPerturbation: for every codec a check runs with, the
// hash of an output encoded again is the hash of the first encoding (an
// honest replica passes), and the output a liar sends, ×1.01, hashes
// differently (a check of it fails).
func TestCheckCatchesAPerturbation(t *testing.T) {
	const rows, C, V = 64, 32, 256
	for _, m := range []compression.Method{compression.MethodNone, compression.MethodFP16, compression.MethodInt8, compression.MethodSubspace} {
		t.Run(fmt.Sprintf("method=%v", m), func(t *testing.T) {
			cfg := compression.DefaultConfig()
			cfg.Method = m
			if m == compression.MethodSubspace {
				cfg.Rank = 8
			}
			w := &Worker{C: C}
			enc := func() *compression.LinkCodec {
				l, err := compression.NewLink(cfg, C, V, 7)
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			rng := rand.New(rand.NewPCG(1, 2))
			x := make([]float32, rows*C)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			tok := make([]int32, rows)
			for i := range tok {
				tok[i] = int32(rng.IntN(V))
			}
			hash := func(l *compression.LinkCodec, x []float32) uint64 {
				p, err := w.encodeOut(l, x, tok, rows)
				if err != nil {
					t.Fatal(err)
				}
				return payloadHash(p)
			}
			sent := hash(enc(), x)
			if again := hash(enc(), x); again != sent {
				t.Fatalf("the same output encoded by another replica's codec hashes %016x, sent %016x: an honest replica would fail", again, sent)
			}
			l := &lie{share: 1, scale: 0.01}
			w.vf.lie = l
			lied := w.perturb(0, 0, x)
			if got := hash(enc(), lied); got == sent {
				t.Fatalf("an output ×1.01 hashes as the honest one: the check cannot catch it")
			}
			if x[0] == lied[0] {
				t.Fatal("perturb changed nothing")
			}
		})
	}
}

// TestLieShare: a liar lies on the share of its micro-batches it was
// given, the same ones on a redo.
func TestLieShare(t *testing.T) {
	l := &lie{share: 0.1}
	n := 0
	for s := range 1000 {
		for j := range 10 {
			if l.lies(1337, s, j) {
				n++
			}
			if l.lies(1337, s, j) != l.lies(1337, s, j) {
				t.Fatal("not deterministic")
			}
		}
	}
	if n < 900 || n > 1100 {
		t.Errorf("lied on %d of 10000, want about 1000", n)
	}
}
