package pipeline

import (
	"testing"

	"github.com/narrowband/narrowband/stages"
)

// FuzzDecodeControl: control frames come from other machines; hostile
// bytes give an error, never a panic or a huge allocation.
func FuzzDecodeControl(f *testing.F) {
	good, _ := encodeCtrl(ctrlMsg{Kind: ctrlStep, Step: 3, LR: 0.1, blob: []byte{1, 2, 3}})
	f.Add(good)
	f.Add(encodeTensors([]stages.Tensor{{Name: "w", Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeCtrl(b); err == nil {
			decodeTensors(m.blob)
		}
		if ts, err := decodeTensors(b); err == nil {
			n := 0
			for _, x := range ts {
				n += 4 * len(x.Data)
			}
			if n > len(b) {
				t.Fatalf("decoded %d bytes of floats from a %d-byte blob", n, len(b))
			}
		}
	})
}
