package report

import (
	"image/color"
	"sort"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// palette is Okabe & Ito's colour-blind-safe set (yellow last: it is faint
// on white), then Paul Tol's muted set for reports with many keys.
var palette = []color.RGBA{
	{0x00, 0x72, 0xB2, 0xFF}, // blue
	{0xD5, 0x5E, 0x00, 0xFF}, // vermillion
	{0x00, 0x9E, 0x73, 0xFF}, // bluish green
	{0xCC, 0x79, 0xA7, 0xFF}, // reddish purple
	{0xE6, 0x9F, 0x00, 0xFF}, // orange
	{0x56, 0xB4, 0xE9, 0xFF}, // sky blue
	{0x00, 0x00, 0x00, 0xFF}, // black
	{0x33, 0x22, 0x88, 0xFF}, // indigo
	{0x88, 0x22, 0x55, 0xFF}, // wine
	{0x99, 0x99, 0x33, 0xFF}, // olive
	{0x44, 0xAA, 0x99, 0xFF}, // teal
	{0xCC, 0x66, 0x77, 0xFF}, // rose
	{0xF0, 0xE4, 0x42, 0xFF}, // yellow
}

// dashes tell apart runs that share a colour (same codec).
var dashes = [][]vg.Length{
	nil,
	{vg.Points(6), vg.Points(3)},
	{vg.Points(2), vg.Points(2)},
	{vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)},
	{vg.Points(12), vg.Points(4)},
}

// glyphs mark held-out points of runs that share a colour.
var glyphs = []draw.GlyphDrawer{
	draw.CircleGlyph{}, draw.PyramidGlyph{}, draw.BoxGlyph{}, draw.RingGlyph{}, draw.TriangleGlyph{},
}

// kindColours colour the boxes of the timeline chart: compute is saturated,
// waiting is grey, so the eye finds the bubbles.
var kindColours = map[string]color.RGBA{
	"forward":   {0x00, 0x72, 0xB2, 0xFF},
	"backward":  {0xD5, 0x5E, 0x00, 0xFF},
	"optimizer": {0x00, 0x9E, 0x73, 0xFF},
	"send":      {0x56, 0xB4, 0xE9, 0xFF},
	"recv_wait": {0xBB, 0xBB, 0xBB, 0xFF},
	"sync_wait": {0x88, 0x88, 0x88, 0xFF},
	"idle":      {0xDD, 0xDD, 0xDD, 0xFF},
}

// kindOrder is the legend order of span kinds.
var kindOrder = []string{"forward", "backward", "optimizer", "send", "recv_wait", "sync_wait", "idle"}

func kindColour(kind string) color.RGBA {
	if c, ok := kindColours[kind]; ok {
		return c
	}
	return color.RGBA{0xCC, 0x79, 0xA7, 0xFF}
}

// styles assigns every run its colour, dash and glyph, and every codec its
// colour, once per report so that all plots agree.
type styles struct {
	byCodec bool // colour means codec (more than one codec present)
	run     map[string]runStyle
	codec   map[string]color.RGBA
	codecs  []string // in first-seen order
}

type runStyle struct {
	Colour color.RGBA
	Dash   []vg.Length
	Glyph  draw.GlyphDrawer
}

func newStyles(runs []Run) styles {
	s := styles{run: map[string]runStyle{}, codec: map[string]color.RGBA{}}
	for _, r := range runs {
		c := r.Codec()
		if _, ok := s.codec[c]; !ok {
			s.codec[c] = palette[len(s.codecs)%len(palette)]
			s.codecs = append(s.codecs, c)
		}
	}
	s.byCodec = len(s.codecs) > 1
	used := map[string]int{} // runs seen per codec
	for i, r := range runs {
		if s.byCodec {
			n := used[r.Codec()]
			used[r.Codec()]++
			s.run[r.Label] = runStyle{Colour: s.codec[r.Codec()], Dash: dashes[n%len(dashes)], Glyph: glyphs[n%len(glyphs)]}
		} else {
			s.run[r.Label] = runStyle{Colour: palette[i%len(palette)], Glyph: draw.CircleGlyph{}}
		}
	}
	return s
}

// lighter mixes c with white, for the second bar of a pair.
func lighter(c color.RGBA, f float64) color.RGBA {
	mix := func(v uint8) uint8 { return uint8(float64(v) + f*(255-float64(v))) }
	return color.RGBA{mix(c.R), mix(c.G), mix(c.B), 0xFF}
}

// withAlpha returns c at opacity a (non-premultiplied input).
func withAlpha(c color.RGBA, a float64) color.NRGBA {
	return color.NRGBA{c.R, c.G, c.B, uint8(a * 255)}
}

// sortedKinds returns the span kinds present, in legend order.
func sortedKinds(present map[string]bool) []string {
	var out []string
	for _, k := range kindOrder {
		if present[k] {
			out = append(out, k)
		}
	}
	var extra []string
	for k := range present {
		if _, ok := kindColours[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	return append(out, extra...)
}
