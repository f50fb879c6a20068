package report

import (
	"bytes"
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/narrowband/narrowband/internal/metrics"
)

// figure is one plot with its legend drawn in a column to its right, so the
// legend never hides data however many runs there are.
type figure struct {
	name   string // file name without extension
	title  string // for report.md
	p      *plot.Plot
	legend plot.Legend
	w, h   vg.Length // of the plot area, without the legend column
}

const pngDPI = 144

// sans is the report's typeface: Liberation Sans reads better at small
// sizes than gonum/plot's default serif. Set per style rather than through
// plot.DefaultFont, which would change other users' plots in the process.
var sans = font.Font{Typeface: "Liberation", Variant: "Sans"}

func sansSize(size vg.Length) font.Font {
	f := sans
	f.Size = size
	return f
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	for _, f := range []*font.Font{&p.Title.TextStyle.Font, &p.X.Label.TextStyle.Font, &p.Y.Label.TextStyle.Font, &p.X.Tick.Label.Font, &p.Y.Tick.Label.Font} {
		f.Typeface, f.Variant = sans.Typeface, sans.Variant
	}
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = 14
	p.Title.Padding = vg.Points(8)
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.X.Label.TextStyle.Font.Size = 11
	p.Y.Label.TextStyle.Font.Size = 11
	p.X.Tick.Label.Font.Size = 9
	p.Y.Tick.Label.Font.Size = 9
	p.X.Padding = vg.Points(4)
	p.Y.Padding = vg.Points(4)
	return p
}

func newLegend() plot.Legend {
	l := plot.NewLegend()
	l.Left = true
	l.Top = true
	l.TextStyle.Font = sansSize(10)
	l.Padding = vg.Points(3)
	l.ThumbnailWidth = vg.Points(22)
	return l
}

// grid draws light grid lines behind the data.
func grid(p *plot.Plot) {
	g := plotter.NewGrid()
	light := color.Gray{0xE4}
	g.Vertical.Color, g.Horizontal.Color = light, light
	p.Add(g)
}

// render draws f into a canvas of the given format ("png" or "svg").
func (f *figure) render(format string) ([]byte, error) {
	var lw vg.Length
	if n := f.legendWidth(); n > 0 {
		lw = n + vg.Points(16)
	}
	W, H := f.w+lw, f.h
	var c vg.CanvasWriterTo
	switch format {
	case "png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(W, H), vgimg.UseDPI(pngDPI), vgimg.UseBackgroundColor(color.White))}
	case "svg":
		c = vgsvg.New(W, H)
	default:
		return nil, fmt.Errorf("unknown image format %q", format)
	}
	dc := draw.New(c)
	pad := vg.Points(6)
	plotC := draw.Crop(dc, pad, -lw-pad, pad, -pad)
	f.p.Draw(plotC)
	if lw > 0 {
		legC := draw.Crop(dc, W-lw+vg.Points(4), -pad, pad, -pad-vg.Points(24))
		f.legend.Draw(legC)
	}
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, err
	}
	if format == "svg" {
		// vgsvg names only Liberation Sans; viewers without it would fall
		// back to a serif. Arial and Helvetica share its metrics, so text
		// still fits where it was laid out.
		return bytes.ReplaceAll(buf.Bytes(), []byte("font-family:Liberation Sans;"),
			[]byte("font-family:'Liberation Sans',Arial,Helvetica,sans-serif;")), nil
	}
	return buf.Bytes(), nil
}

func (f *figure) legendWidth() vg.Length {
	var dc draw.Canvas
	r := f.legend.Rectangle(dc)
	return r.Max.X - r.Min.X
}

// save writes f as PNG and SVG into dir and returns the paths. gonum/plot
// panics on some degenerate inputs (e.g. a log axis over non-positive
// values); the inputs are filtered before they get here, and the recover
// turns any case we missed into an error about this one plot, so a finished
// run never loses its report to a plotting bug.
func (f *figure) save(dir string) (files []string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("plot %s: drawing failed: %v", f.name, r)
		}
	}()
	for _, format := range []string{"png", "svg"} {
		b, err := f.render(format)
		if err != nil {
			return files, fmt.Errorf("plot %s: %w", f.name, err)
		}
		path := filepath.Join(dir, f.name+"."+format)
		if err := metrics.WriteFileAtomic(path, b); err != nil {
			return files, fmt.Errorf("plot %s: %w", f.name, err)
		}
		files = append(files, path)
	}
	return files, nil
}

// swatch is a filled-box legend thumbnail.
type swatch struct{ c color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	h := c.Max.Y - c.Min.Y
	r := vg.Rectangle{Min: vg.Point{X: c.Min.X + 2, Y: c.Min.Y + h*0.15}, Max: vg.Point{X: c.Max.X - 2, Y: c.Max.Y - h*0.15}}
	c.FillPolygon(s.c, []vg.Point{r.Min, {X: r.Max.X, Y: r.Min.Y}, r.Max, {X: r.Min.X, Y: r.Max.Y}})
}

// lineThumb is a legend thumbnail of a line style.
type lineThumb struct{ sty draw.LineStyle }

func (l lineThumb) Thumbnail(c *draw.Canvas) {
	y := c.Center().Y
	c.StrokeLine2(l.sty, c.Min.X, y, c.Max.X, y)
}

// glyphThumb is a legend thumbnail of a marker.
type glyphThumb struct{ sty draw.GlyphStyle }

func (g glyphThumb) Thumbnail(c *draw.Canvas) { c.DrawGlyph(g.sty, c.Center()) }
