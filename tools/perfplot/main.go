// Command perfplot draws docs/performance.png from `fleetprov loadtest
// --out` files: provisionings per second and device p99 against
// concurrency, one line per payload format and fleet size. Run it through the Taskfile:
// `go tool -modfile=tools/go.mod task perfplot`.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"os"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// result is the part of a loadtest summary the plot needs.
type result struct {
	Devices     int     `json:"devices"`
	Concurrency int     `json:"concurrency"`
	Format      string  `json:"format"`
	PerSecond   float64 `json:"provisioningsPerSecond"`
	Failed      int     `json:"failed"`
	Steps       map[string]struct {
		P99 float64 `json:"p99Ms"`
	} `json:"steps"`
}

func main() {
	out := flag.String("o", "docs/performance.png", "PNG to write")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: perfplot [-o FILE.png] LOADTEST.json...")
		os.Exit(2)
	}
	byFormat := map[string][]result{}
	for _, path := range flag.Args() {
		b, err := os.ReadFile(path)
		if err != nil {
			fail(err)
		}
		var r result
		if err := json.Unmarshal(b, &r); err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		key := fmt.Sprintf("%s, %d devices", r.Format, r.Devices)
		byFormat[key] = append(byFormat[key], r)
	}
	rate, p99 := plot.New(), plot.New()
	rate.Title.Text = "Provisionings per second"
	p99.Title.Text = "Device p99, whole provisioning (ms)"
	for _, p := range []*plot.Plot{rate, p99} {
		p.X.Label.Text = "devices at once"
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
		p.Legend.Left = true
		p.Y.Min = 0
	}
	// Throughput lines run level near the top: their legend goes below.
	rate.Legend.Top, rate.Legend.Left = false, false
	rate.Legend.YOffs = vg.Inch / 2
	colors := map[string]color.Color{"json": color.RGBA{R: 31, G: 119, B: 180, A: 255}, "cbor": color.RGBA{R: 214, G: 39, B: 40, A: 255}}
	formats := make([]string, 0, len(byFormat))
	for f := range byFormat {
		formats = append(formats, f)
	}
	sort.Strings(formats)
	for _, f := range formats {
		rs := byFormat[f]
		sort.Slice(rs, func(i, j int) bool { return rs[i].Concurrency < rs[j].Concurrency })
		var rp, pp plotter.XYs
		for _, r := range rs {
			rp = append(rp, plotter.XY{X: float64(r.Concurrency), Y: r.PerSecond})
			pp = append(pp, plotter.XY{X: float64(r.Concurrency), Y: r.Steps["total"].P99})
		}
		for _, pair := range []struct {
			p   *plot.Plot
			xys plotter.XYs
		}{{rate, rp}, {p99, pp}} {
			l, pts, err := plotter.NewLinePoints(pair.xys)
			if err != nil {
				fail(err)
			}
			c := colors[rs[0].Format]
			l.Color, pts.Color = c, c
			if rs[0].Devices > 1000 {
				// The larger fleet: same colour per format, dashed.
				l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
				pts.Shape = draw.SquareGlyph{}
			}
			pair.p.Add(l, pts)
			pair.p.Legend.Add(f, l, pts)
		}
	}
	img := vgimg.New(12*vg.Inch, 4.5*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 4, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8}
	canvases := plot.Align([][]*plot.Plot{{rate, p99}}, tiles, dc)
	rate.Draw(canvases[0][0])
	p99.Draw(canvases[0][1])
	f, err := os.Create(*out)
	if err != nil {
		fail(err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		fail(err)
	}
	if err := f.Close(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "perfplot:", err)
	os.Exit(1)
}
