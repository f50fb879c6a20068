package kernels

import (
	"fmt"
	"testing"
)

// TestPackingMatchesNaive checks both packing copies, at every panel width
// a kernel uses, against the definition, including partial panels (zero
// padding) and step counts off the 8-step blocks of the vector paths.
func TestPackingMatchesNaive(t *testing.T) {
	const ld = 41
	src := make([]float32, 40*ld)
	for i := range src {
		src[i] = float32(i) + 0.5
	}
	for _, w := range []int{4, 6, 8, 12, 16} {
		for width := 1; width <= w; width++ {
			for _, kc := range []int{1, 7, 8, 9, 24, 33} {
				off := 3
				t.Run(fmt.Sprintf("w=%d/width=%d/kc=%d", w, width, kc), func(t *testing.T) {
					d := make([]float32, kc*w)
					for i := range d {
						d[i] = -1 // must all be overwritten
					}
					interleave(d, src, off, ld, width, kc, w)
					for p := 0; p < kc; p++ {
						for r := 0; r < w; r++ {
							want := float32(0)
							if r < width {
								want = src[off+r*ld+p]
							}
							if d[p*w+r] != want {
								t.Fatalf("interleave: step %d row %d = %v, want %v", p, r, d[p*w+r], want)
							}
						}
					}
					for i := range d {
						d[i] = -1
					}
					copySteps(d, src, off, ld, width, kc, w)
					for p := 0; p < kc; p++ {
						for r := 0; r < w; r++ {
							want := float32(0)
							if r < width {
								want = src[off+p*ld+r]
							}
							if d[p*w+r] != want {
								t.Fatalf("copySteps: step %d col %d = %v, want %v", p, r, d[p*w+r], want)
							}
						}
					}
				})
			}
		}
	}
}
