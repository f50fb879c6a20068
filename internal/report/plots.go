package report

import (
	"fmt"
	"image/color"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/narrowband/narrowband/compression"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/narrowband/narrowband/internal/metrics"
)

var grey = color.RGBA{0x66, 0x66, 0x66, 0xFF}

// legendName is a run's legend entry: its label, plus its codec when colour
// means codec and the label does not already say it.
func legendName(r Run, st styles) string {
	if st.byCodec && !strings.Contains(r.Label, r.Config.Compression.Method.String()) {
		return r.Label + " [" + r.Codec() + "]"
	}
	return r.Label
}

// lossUnit is what a loss of these runs is per: a byte when every run's
// tokens are bytes, else a token (data.tokenizer).
func lossUnit(runs []Run) string {
	for _, r := range runs {
		if !r.Config.Data.Bytes() {
			return "nats/token"
		}
	}
	return "nats/byte"
}

// tokenized reports whether any run has a tokenizer.
func tokenized(runs []Run) bool { return lossUnit(runs) == "nats/token" }

// lossFigure plots train loss (thin, smoothed when long) and held-out loss
// (thick, with markers) against x(record) for every run. nil: no data.
func lossFigure(runs []Run, st styles, name, title, xlabel string, x func(metrics.StepRecord) float64) (*figure, error) {
	p := newPlot(title, xlabel, "loss ("+lossUnit(runs)+")")
	grid(p)
	leg := newLegend()
	any := false
	for _, r := range runs {
		rs := st.run[r.Label]
		var train, val plotter.XYs
		for _, s := range r.Steps {
			xv := x(s)
			if !plottable(xv) || !plottable(s.Loss) {
				continue
			}
			train = append(train, plotter.XY{X: xv, Y: s.Loss})
			if s.ValLoss != nil && plottable(*s.ValLoss) {
				val = append(val, plotter.XY{X: xv, Y: *s.ValLoss})
			}
		}
		if len(train) == 0 && len(val) == 0 {
			continue
		}
		any = true
		if len(train) > 0 {
			raw := lineStyle(rs.Colour, 1, rs.Dash)
			if len(train) >= 30 {
				// Noisy per-step losses stay visible but faint; the
				// smoothed curve carries the trend.
				raw = draw.LineStyle{Color: withAlpha(rs.Colour, 0.25), Width: vg.Points(0.6)}
				if err := addLine(p, stride(ema(train, float64(len(train))/25), maxLinePoints), lineStyle(rs.Colour, 1.2, rs.Dash)); err != nil {
					return nil, err
				}
			}
			if err := addLine(p, envelope(train, maxLinePoints/2), raw); err != nil {
				return nil, err
			}
		}
		if len(val) > 0 {
			if len(val) > 1 {
				if err := addLine(p, envelope(val, maxLinePoints/2), lineStyle(rs.Colour, 2.4, rs.Dash)); err != nil {
					return nil, err
				}
			}
			if len(val) > 60 {
				// Frequent evaluations: markers would merge into a band;
				// mark only the final one.
				val = val[len(val)-1:]
			}
			sc, err := plotter.NewScatter(val)
			if err != nil {
				return nil, err
			}
			sc.GlyphStyle = draw.GlyphStyle{Color: rs.Colour, Radius: vg.Points(3.5), Shape: rs.Glyph}
			p.Add(sc)
		}
		leg.Add(legendName(r, st), lineThumb{lineStyle(rs.Colour, 2.4, rs.Dash)}, glyphThumb{draw.GlyphStyle{Color: rs.Colour, Radius: vg.Points(3), Shape: rs.Glyph}})
	}
	if !any {
		return nil, nil
	}
	if name == "loss_vs_tokens" {
		p.X.Tick.Marker = siTicks{}
	}
	leg.Add("")
	leg.Add("train loss", lineThumb{draw.LineStyle{Color: grey, Width: vg.Points(0.8)}})
	leg.Add("held-out loss", lineThumb{lineStyle(grey, 2.4, nil)}, glyphThumb{draw.GlyphStyle{Color: grey, Radius: vg.Points(3), Shape: draw.CircleGlyph{}}})
	return &figure{name: name, title: title, p: p, legend: leg, w: 7 * vg.Inch, h: 4.5 * vg.Inch}, nil
}

func lineStyle(c color.Color, w float64, dash []vg.Length) draw.LineStyle {
	return draw.LineStyle{Color: c, Width: vg.Points(w), Dashes: dash}
}

func addLine(p *plot.Plot, xys plotter.XYs, sty draw.LineStyle) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.LineStyle = sty
	p.Add(l)
	return nil
}

// maxLinePoints bounds the points of a drawn line: a plot is about 1,000
// pixels wide, and a 100k-step run would otherwise give multi-megabyte SVGs
// and seconds of drawing at the end of every run.
const maxLinePoints = 2000

// envelope thins xys to at most 2·buckets points, keeping the lowest and the
// highest point of each bucket (in x order) so the noise band looks the same.
func envelope(xys plotter.XYs, buckets int) plotter.XYs {
	if len(xys) <= 2*buckets {
		return xys
	}
	size := (len(xys) + buckets - 1) / buckets
	out := make(plotter.XYs, 0, 2*buckets)
	for i := 0; i < len(xys); i += size {
		b := xys[i:min(i+size, len(xys))]
		lo, hi := 0, 0
		for j := range b {
			if b[j].Y < b[lo].Y {
				lo = j
			}
			if b[j].Y > b[hi].Y {
				hi = j
			}
		}
		out = append(out, b[min(lo, hi)])
		if lo != hi {
			out = append(out, b[max(lo, hi)])
		}
	}
	return out
}

// stride thins a smooth line to at most n points, keeping the last.
func stride(xys plotter.XYs, n int) plotter.XYs {
	if len(xys) <= n {
		return xys
	}
	k := (len(xys) + n - 1) / n
	out := make(plotter.XYs, 0, n+1)
	for i := 0; i < len(xys); i += k {
		out = append(out, xys[i])
	}
	if (len(xys)-1)%k != 0 {
		out = append(out, xys[len(xys)-1])
	}
	return out
}

// ema smooths ys with an exponential moving average of the given span
// (in points), started at the first value so it has no warm-up bias.
func ema(xys plotter.XYs, span float64) plotter.XYs {
	a := 2 / (span + 1)
	out := make(plotter.XYs, len(xys))
	m := xys[0].Y
	for i, p := range xys {
		m += a * (p.Y - m)
		out[i] = plotter.XY{X: p.X, Y: m}
	}
	return out
}

// bandwidthFigure plots tokens/s against link bandwidth, one line per codec,
// with unlimited bandwidth (0) as a point labelled ∞ at the right. nil when
// the runs do not vary bandwidth.
func bandwidthFigure(runs []Run, st styles) (*figure, error) {
	type pt struct{ bw, tps float64 }
	byCodec := map[string][]pt{}
	distinct := map[float64]bool{}
	for _, r := range runs {
		bw, tps := r.Config.Network.BandwidthMbps, r.Summary.TokensPerSecond
		if !plottable(bw) || bw < 0 || !plottable(tps) || tps <= 0 {
			continue
		}
		distinct[bw] = true
		byCodec[r.Codec()] = append(byCodec[r.Codec()], pt{bw, tps})
	}
	if len(distinct) < 2 {
		return nil, nil
	}
	var finiteBW []float64
	for bw := range distinct {
		if bw > 0 {
			finiteBW = append(finiteBW, bw)
		}
	}
	sort.Float64s(finiteBW)
	lo, hi := finiteBW[0], finiteBW[len(finiteBW)-1]
	logX := lo > 0 && hi/lo >= 8
	inf := hi * 1.3
	if logX {
		inf = hi * 2.5
	} else if len(finiteBW) > 1 {
		inf = hi + 0.2*(hi-lo)
	}
	p := newPlot("Throughput vs link bandwidth", "link bandwidth per direction (Mbit/s)", "throughput (tokens/s)")
	grid(p)
	var ticks []plot.Tick
	for _, bw := range finiteBW {
		ticks = append(ticks, plot.Tick{Value: bw, Label: strconv.FormatFloat(bw, 'g', 4, 64)})
	}
	if distinct[0] {
		ticks = append(ticks, plot.Tick{Value: inf, Label: "∞"})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	if logX {
		p.X.Scale = plot.LogScale{}
	}
	p.Y.Min = 0
	leg := newLegend()
	var maxTPS float64
	for _, c := range st.codecs {
		pts := byCodec[c]
		if len(pts) == 0 {
			continue
		}
		sort.Slice(pts, func(i, j int) bool {
			bi, bj := pts[i].bw, pts[j].bw
			if bi == 0 {
				bi = math.Inf(1)
			}
			if bj == 0 {
				bj = math.Inf(1)
			}
			return bi < bj
		})
		col := st.codec[c]
		var solid, tail, all plotter.XYs
		for _, q := range pts {
			x := q.bw
			if x == 0 {
				x = inf
			}
			all = append(all, plotter.XY{X: x, Y: q.tps})
			if q.bw > 0 {
				solid = append(solid, plotter.XY{X: x, Y: q.tps})
			}
		}
		if len(solid) > 1 {
			if err := addLine(p, solid, lineStyle(col, 2, nil)); err != nil {
				return nil, err
			}
		}
		if n := len(solid); n > 0 && len(all) > n {
			// The step to "unlimited" is not a measured slope: dashed.
			tail = append(tail, solid[n-1], all[n])
			if err := addLine(p, tail, lineStyle(col, 1.4, dashes[1])); err != nil {
				return nil, err
			}
		}
		sc, err := plotter.NewScatter(all)
		if err != nil {
			return nil, err
		}
		for _, q := range all {
			maxTPS = math.Max(maxTPS, q.Y)
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: col, Radius: vg.Points(4), Shape: draw.CircleGlyph{}}
		p.Add(sc)
		leg.Add(c, lineThumb{lineStyle(col, 2, nil)}, glyphThumb{sc.GlyphStyle})
	}
	if distinct[0] {
		leg.Add("")
		leg.Add("∞ = unshaped link")
	}
	p.Y.Max = maxTPS * 1.1
	// Room either side so the end markers are not cut by the frame.
	if logX {
		p.X.Min, p.X.Max = lo/1.4, inf*1.4
	} else {
		span := inf - math.Min(lo, inf)
		if span == 0 {
			span = inf
		}
		p.X.Min, p.X.Max = math.Max(0, lo-0.1*span), inf+0.1*span
	}
	return &figure{name: "tokens_per_second_vs_bandwidth", title: "Throughput vs link bandwidth", p: p, legend: leg, w: 7 * vg.Inch, h: 4.5 * vg.Inch}, nil
}

// wireFigure is a horizontal bar chart of wire bytes per token, forward
// (solid) and backward (light), one pair per run with a link.
func wireFigure(runs []Run, st styles) (*figure, error) {
	var rs []Run
	for _, r := range runs {
		f, b := r.Summary.WireBytesPerTokenForward, r.Summary.WireBytesPerTokenBackward
		if plottable(f) && plottable(b) && f >= 0 && b >= 0 && f+b > 0 {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return nil, nil
	}
	rs, labels := collapse(rs, st, func(r Run) string {
		return fmt.Sprintf("%.3g/%.3g", r.Summary.WireBytesPerTokenForward, r.Summary.WireBytesPerTokenBackward)
	})
	p := newPlot("Bytes on the wire per token, per link", "wire bytes per token (bytes/token)", "")
	grid(p)
	n := len(rs)
	names := make([]string, n)
	const barPts = 9
	w := vg.Points(barPts)
	var maxV float64
	var lab plotter.XYLabels
	for i, r := range rs {
		y := float64(n - 1 - i) // first run at the top
		names[n-1-i] = labels[i]
		col := st.run[r.Label].Colour
		for _, d := range []struct {
			v   float64
			off vg.Length
			c   color.Color
		}{
			{r.Summary.WireBytesPerTokenForward, w / 2, col},
			{r.Summary.WireBytesPerTokenBackward, -w / 2, lighter(col, 0.55)},
		} {
			bc, err := plotter.NewBarChart(plotter.Values{d.v}, w)
			if err != nil {
				return nil, err
			}
			bc.Horizontal = true
			bc.XMin = y
			bc.Offset = d.off
			bc.Color = d.c
			bc.LineStyle.Width = 0
			p.Add(bc)
			maxV = math.Max(maxV, d.v)
			lab.XYs = append(lab.XYs, plotter.XY{X: d.v, Y: y})
			lab.Labels = append(lab.Labels, fmtBytes(d.v))
		}
	}
	vals, err := plotter.NewLabels(lab)
	if err != nil {
		return nil, err
	}
	for i := range vals.TextStyle {
		vals.TextStyle[i].Font = sansSize(8)
		vals.TextStyle[i].YAlign = draw.YCenter
	}
	p.Add(&barLabels{Labels: vals, dy: w / 2})
	p.NominalY(names...)
	p.Y.Tick.Label.Font.Size = 10
	p.X.Min = 0
	if maxV > 0 {
		p.X.Max = maxV * 1.18
	}
	p.Y.Min, p.Y.Max = -0.7, float64(n)-0.3
	leg := newLegend()
	leg.Add("forward (activations)", swatch{grey})
	leg.Add("backward (gradients)", swatch{lighter(grey, 0.55)})
	h := vg.Inch + vg.Length(n)*0.42*vg.Inch
	return &figure{name: "wire_bytes_per_token", title: "Wire bytes per token", p: p, legend: leg, w: 7 * vg.Inch, h: max(h, 2.4*vg.Inch)}, nil
}

// collapse keeps one run per codec and value key (runs that differ only in,
// say, bandwidth send the same bytes) and names each kept run by its codec
// when that is unambiguous, else by its label.
func collapse(rs []Run, st styles, key func(Run) string) ([]Run, []string) {
	seen := map[string]bool{}
	perCodec := map[string]int{}
	var kept []Run
	for _, r := range rs {
		k := r.Codec() + "\x00" + key(r)
		if seen[k] {
			continue
		}
		seen[k] = true
		perCodec[r.Codec()]++
		kept = append(kept, r)
	}
	names := make([]string, len(kept))
	for i, r := range kept {
		switch {
		case perCodec[r.Codec()] == 1:
			names[i] = r.Codec()
		case st.byCodec && !strings.Contains(r.Label, r.Config.Compression.Method.String()):
			names[i] = r.Label + " [" + r.Codec() + "]"
		default:
			names[i] = r.Label
		}
	}
	return kept, names
}

// barLabels draws the value labels of wireFigure beside their bars: even
// labels belong to the upper (forward) bar, odd to the lower (backward).
type barLabels struct {
	*plotter.Labels
	dy vg.Length
}

func (b *barLabels) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	for i, xy := range b.XYs {
		pt := vg.Point{X: trX(xy.X) + vg.Points(3), Y: trY(xy.Y) + b.dy}
		if i%2 == 1 {
			pt.Y = trY(xy.Y) - b.dy
		}
		c.FillText(b.TextStyle[i], pt, b.Labels.Labels[i])
	}
}

func fmtBytes(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// paretoFigure plots compression ratio against the held-out loss gap to the
// uncompressed run; nil unless there is a `none` run and another codec.
func paretoFigure(runs []Run, st styles) (*figure, error) {
	type pt struct {
		r            Run
		ratio, gap   float64
		codec, label string
	}
	var pts []pt
	others := false
	for _, r := range runs {
		ref, ok := reference(runs, r)
		ratio := ratioVsFP32(r)
		if !ok || ratio <= 0 || !plottable(ratio) || !plottable(r.Summary.FinalValLoss) {
			continue
		}
		if !plottable(r.Summary.FinalValLoss - ref.Summary.FinalValLoss) {
			continue
		}
		if r.Config.Compression.Method != compression.MethodNone {
			others = true
		}
		pts = append(pts, pt{r: r, ratio: ratio, gap: r.Summary.FinalValLoss - ref.Summary.FinalValLoss, codec: r.Codec(), label: r.Label})
	}
	if !others {
		return nil, nil
	}
	// The same codec at another bandwidth is the same point: draw it once,
	// named by its codec when the codec has only that point.
	kept := pts[:0]
	seenPt := map[string]bool{}
	perCodec := map[string]int{}
	for _, q := range pts {
		k := fmt.Sprintf("%s\x00%.4g\x00%.4g", q.codec, q.ratio, q.gap)
		if !seenPt[k] {
			seenPt[k] = true
			perCodec[q.codec]++
			kept = append(kept, q)
		}
	}
	for i, q := range kept {
		if perCodec[q.codec] == 1 {
			kept[i].label = q.codec
		}
	}
	pts = kept
	// The gap in percent of none's loss, on an axis that the codecs near
	// none decide: one far-off point (topk at +62%) would otherwise squash
	// every other gap into a line. Points beyond the top are drawn on the
	// top edge as triangles, their value in the label: a broken axis.
	for i := range pts {
		ref, _ := reference(runs, pts[i].r)
		pts[i].gap = 100 * pts[i].gap / ref.Summary.FinalValLoss
	}
	gaps, names := make([]float64, len(pts)), make([]string, len(pts))
	for i, q := range pts {
		gaps[i], names[i] = q.gap, q.label
	}
	ys, names, top, pad := paretoAxis(gaps, names)
	clipped := false
	for i, q := range pts {
		clipped = clipped || q.gap > top
		pts[i].label = names[i]
	}
	p := newPlot("Compression vs quality", "compression ratio vs fp32 activations (×, log scale)", "held-out loss gap vs none (%)")
	grid(p)
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	lo, hi := math.Inf(1), math.Inf(-1)
	leg := newLegend()
	seen := map[string]bool{}
	var lab plotter.XYLabels
	for i, q := range pts {
		lo, hi = math.Min(lo, q.ratio), math.Max(hi, q.ratio)
		col := st.codec[q.codec]
		y, shape, label := ys[i], draw.GlyphDrawer(draw.CircleGlyph{}), q.label
		if q.gap > top {
			shape = draw.TriangleGlyph{}
		}
		sc, err := plotter.NewScatter(plotter.XYs{{X: q.ratio, Y: y}})
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: col, Radius: vg.Points(4.5), Shape: shape}
		p.Add(sc)
		if !seen[q.codec] {
			seen[q.codec] = true
			leg.Add(q.codec, glyphThumb{draw.GlyphStyle{Color: col, Radius: vg.Points(4.5), Shape: draw.CircleGlyph{}}})
		}
		lab.XYs = append(lab.XYs, plotter.XY{X: q.ratio, Y: y})
		lab.Labels = append(lab.Labels, label)
	}
	if len(pts) <= 16 {
		labels, err := plotter.NewLabels(lab)
		if err != nil {
			return nil, err
		}
		for i := range labels.TextStyle {
			labels.TextStyle[i].Font = sansSize(8)
			labels.TextStyle[i].Color = grey
		}
		labels.Offset = vg.Point{X: vg.Points(6), Y: vg.Points(3)}
		p.Add(labels)
	}
	p.X.Min, p.X.Max = lo/1.6, hi*2
	p.Y.Min, p.Y.Max = ys0(ys, pad), top+pad/2
	zero, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: 0}, {X: p.X.Max, Y: 0}})
	if err != nil {
		return nil, err
	}
	zero.LineStyle = lineStyle(grey, 0.8, dashes[1])
	p.Add(zero)
	bar, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: 3}, {X: p.X.Max, Y: 3}})
	if err != nil {
		return nil, err
	}
	bar.LineStyle = lineStyle(grey, 0.8, dashes[2])
	p.Add(bar)
	leg.Add("")
	leg.Add("same loss as none", lineThumb{zero.LineStyle})
	leg.Add("3% gap", lineThumb{bar.LineStyle})
	leg.Add("below: better")
	if clipped {
		leg.Add("▲ off scale: gap in label")
	}
	return &figure{name: "pareto", title: "Compression vs quality", p: p, legend: leg, w: 7 * vg.Inch, h: 4.5 * vg.Inch}, nil
}

// paretoAxis places the Pareto plot's points on its gap axis (percent):
// the axis runs from the lowest gap (or 0) to the highest gap of at most
// paretoClip (or the 3% bar), padded; gaps above that top are drawn on it,
// their value added to their label. It returns each point's y and label,
// the top and the padding.
func paretoAxis(gaps []float64, labels []string) (ys []float64, out []string, top, pad float64) {
	yhi, ylo := 3.0, 0.0
	for _, g := range gaps {
		if g <= paretoClip {
			yhi, ylo = math.Max(yhi, g), math.Min(ylo, g)
		}
	}
	pad = 0.12 * (yhi - ylo)
	top = yhi + pad
	ys, out = make([]float64, len(gaps)), make([]string, len(gaps))
	for i, g := range gaps {
		ys[i], out[i] = g, labels[i]
		if g > top {
			ys[i], out[i] = top, fmt.Sprintf("%s (%+.0f%%, off scale)", labels[i], g)
		}
	}
	return ys, out, top, pad
}

// ys0 is the bottom of the gap axis: the lowest point (or 0), padded.
func ys0(ys []float64, pad float64) float64 {
	lo := 0.0
	for _, y := range ys {
		lo = math.Min(lo, y)
	}
	return lo - pad
}

// paretoClip is the largest gap (percent) that sets the Pareto plot's axis;
// larger gaps are drawn on its top edge.
const paretoClip = 10.0

// ratioVsFP32 is fp32 activation bytes per token (4·n_embd) over the run's
// forward wire bytes per token; 0 when the run has no link.
func ratioVsFP32(r Run) float64 { return fp32Over(r, r.Summary.WireBytesPerTokenForward) }

// fp32Over is fp32 bytes per token (4·n_embd) over b wire bytes per token;
// 0 when there is no such traffic.
func fp32Over(r Run, b float64) float64 {
	if b <= 0 || !finite(b) || r.Config.Model.NEmbd <= 0 {
		return 0
	}
	return 4 * float64(r.Config.Model.NEmbd) / b
}

// ratioVsFP32Backward is ratioVsFP32 for the gradients.
func ratioVsFP32Backward(r Run) float64 { return fp32Over(r, r.Summary.WireBytesPerTokenBackward) }

// reference picks the `none` run to compare r against: one that trained the
// same model on the same data for as long, if any, else the first `none`.
func reference(runs []Run, r Run) (Run, bool) {
	var first *Run
	for i := range runs {
		c := &runs[i]
		if c.Config.Compression.Method != compression.MethodNone || !finite(c.Summary.FinalValLoss) {
			continue
		}
		if first == nil {
			first = c
		}
		if sameTraining(*c, r) {
			return *c, true
		}
	}
	if first == nil {
		return Run{}, false
	}
	return *first, true
}

func sameTraining(a, b Run) bool {
	ca, cb := a.Config, b.Config
	return ca.Model == cb.Model && ca.Run.Steps == cb.Run.Steps && ca.Run.Seed == cb.Run.Seed &&
		ca.Train.BatchSize == cb.Train.BatchSize && ca.Train.LearningRate == cb.Train.LearningRate &&
		slices.Equal(ca.Data.Path, cb.Data.Path) && ca.Data.Tokenizer == cb.Data.Tokenizer
}

// timelineFigure is a Gantt chart of one run's timeline.jsonl.
func timelineFigure(r Run, name string) (*figure, error) {
	if len(r.Timeline) == 0 {
		return nil, nil
	}
	g := &gantt{spans: r.Timeline}
	stages := map[int]bool{}
	kinds := map[string]bool{}
	for _, s := range r.Timeline {
		stages[s.Stage] = true
		kinds[s.Kind] = true
	}
	var ids []int
	for s := range stages {
		ids = append(ids, s)
	}
	sort.Ints(ids)
	if len(ids) > 64 {
		return nil, fmt.Errorf("timeline of %s: %d stages, more than a chart can show", r.Label, len(ids))
	}
	g.row = map[int]int{}
	var ticks []plot.Tick
	for i, s := range ids {
		g.row[s] = i
		ticks = append(ticks, plot.Tick{Value: -float64(i), Label: "stage " + strconv.Itoa(s)})
	}
	p := newPlot("Pipeline timeline: "+r.Label, "time since the run started (seconds)", "")
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Tick.Label.Font.Size = 10
	p.Add(g)
	leg := newLegend()
	for _, k := range sortedKinds(kinds) {
		leg.Add(strings.ReplaceAll(k, "_", " "), swatch{kindColour(k)})
	}
	h := 1.3*vg.Inch + vg.Length(len(ids))*0.55*vg.Inch
	return &figure{name: name, title: "Timeline: " + r.Label, p: p, legend: leg, w: 10 * vg.Inch, h: h}, nil
}

// gantt draws spans as boxes, one row per stage (first stage on top), with
// dotted lines where each step begins.
type gantt struct {
	spans []metrics.Span
	row   map[int]int
}

func (g *gantt) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax = math.Inf(1), math.Inf(-1)
	for _, s := range g.spans {
		xmin, xmax = math.Min(xmin, s.Start), math.Max(xmax, s.End)
	}
	if xmax <= xmin {
		xmax = xmin + 1e-3
	}
	return xmin, xmax, -float64(len(g.row)) + 0.5, 0.75 // room above for the step labels
}

func (g *gantt) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	stepStart := map[int]float64{}
	for _, s := range g.spans {
		if v, ok := stepStart[s.Step]; !ok || s.Start < v {
			stepStart[s.Step] = s.Start
		}
	}
	steps := make([]int, 0, len(stepStart))
	for s := range stepStart {
		steps = append(steps, s)
	}
	sort.Ints(steps)
	sep := draw.LineStyle{Color: color.Gray{0x99}, Width: vg.Points(0.7), Dashes: dashes[2]}
	small := sansSize(8)
	stepLab := draw.TextStyle{Color: grey, Font: small, Handler: plot.DefaultTextHandler, XAlign: draw.XLeft, YAlign: draw.YTop}
	for _, st := range steps {
		x := trX(stepStart[st])
		c.StrokeLine2(sep, x, c.Min.Y, x, c.Max.Y)
		c.FillText(stepLab, vg.Point{X: x + vg.Points(2), Y: c.Max.Y}, "step "+strconv.Itoa(st))
	}
	in := draw.TextStyle{Color: color.White, Font: stepLab.Font, Handler: plot.DefaultTextHandler, XAlign: draw.XCenter, YAlign: draw.YCenter}
	edge := draw.LineStyle{Color: color.White, Width: vg.Points(0.4)}
	for _, s := range g.spans {
		y := -float64(g.row[s.Stage])
		x0, x1 := trX(s.Start), trX(s.End)
		y0, y1 := trY(y-0.36), trY(y+0.36)
		box := []vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}
		c.FillPolygon(kindColour(s.Kind), c.ClipPolygonXY(box))
		if x1-x0 > vg.Points(3) {
			c.StrokeLines(edge, c.ClipLinesXY(append(box, box[0]))...)
		}
		if s.Kind == "forward" || s.Kind == "backward" {
			t := strconv.Itoa(s.Micro)
			if x1-x0 > in.Width(t)+vg.Points(4) {
				c.FillText(in, vg.Point{X: (x0 + x1) / 2, Y: (y0 + y1) / 2}, t)
			}
		}
	}
}

// siTicks are gonum's default ticks labelled with SI suffixes (20k, 1.5M),
// which read faster than 20000 and 1.5e+06 on a tokens axis.
type siTicks struct{}

func (siTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = formatSI(ts[i].Value)
		}
	}
	return ts
}

func formatSI(v float64) string {
	a := math.Abs(v)
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if a >= u.div {
			return strconv.FormatFloat(v/u.div, 'g', 4, 64) + u.suffix
		}
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}
