package console

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"
)

// Charts of the last hour, drawn on the server as SVG: no script, no
// external resource. The points come from the sampler's history: one every
// historyStep, historyLen of them.

const (
	historyStep = 10 * time.Second
	historyLen  = int(time.Hour / historyStep)
)

// point is one historyStep of the gateway, for the charts.
type point struct {
	at        time.Time
	rates     map[string]float64 // tickets per second by status, over the step
	p50, p99  float64            // commit latency over the step, seconds (upper bucket bounds); -1: no commit
	outboxAge float64            // seconds
	storeSize float64            // bytes
}

// series is one line of a chart.
type series struct {
	name   string
	colour string
	values []float64 // per point; NaN: no value
}

// chart is a chart's data: its series over times.
type chart struct {
	id, title, unit string
	at              []time.Time
	series          []series
}

const (
	chartW, chartH = 560, 150
	chartLeft      = 64 // room for the y labels
	chartBottom    = 22 // room for the x labels
)

// svg draws c: axes with the largest value and 0, the first and last
// times in UTC, a polyline per series and a legend; each point's value
// is in its title.
func (c chart) svg() template.HTML {
	var b strings.Builder
	top := 0.0
	for _, s := range c.series {
		for _, v := range s.values {
			if !math.IsNaN(v) {
				top = math.Max(top, v)
			}
		}
	}
	if top == 0 {
		top = 1
	}
	plotW, plotH := float64(chartW-chartLeft-8), float64(chartH-chartBottom-8)
	end := time.Now()
	if n := len(c.at); n > 0 {
		end = c.at[n-1]
	}
	start := end.Add(-time.Hour)
	x := func(t time.Time) float64 { return chartLeft + plotW*float64(t.Sub(start))/float64(time.Hour) }
	y := func(v float64) float64 { return 8 + plotH*(1-v/top) }
	fmt.Fprintf(&b, `<svg class="chart" id="%s" role="img" aria-labelledby="%s-title" viewBox="0 0 %d %d" width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`,
		c.id, c.id, chartW, chartH+18*((len(c.series)+2)/3), chartW, chartH+18*((len(c.series)+2)/3))
	fmt.Fprintf(&b, `<title id="%s-title">%s, the last hour</title>`, c.id, template.HTMLEscapeString(c.title))
	fmt.Fprintf(&b, `<line class="axis" x1="%d" y1="8" x2="%d" y2="%.1f"/><line class="axis" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`,
		chartLeft, chartLeft, 8+plotH, chartLeft, 8+plotH, chartW-8, 8+plotH)
	fmt.Fprintf(&b, `<text class="tick" x="%d" y="14" text-anchor="end">%s</text><text class="tick" x="%d" y="%.1f" text-anchor="end">0</text>`,
		chartLeft-4, template.HTMLEscapeString(formatValue(top, c.unit)), chartLeft-4, 8+plotH)
	fmt.Fprintf(&b, `<text class="tick" x="%d" y="%d">%s</text><text class="tick" x="%d" y="%d" text-anchor="end">%s</text>`,
		chartLeft, chartH-4, start.UTC().Format("15:04Z"), chartW-8, chartH-4, end.UTC().Format(time.RFC3339))
	for i, s := range c.series {
		var pts []string
		for j, v := range s.values {
			if j < len(c.at) && !math.IsNaN(v) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(c.at[j]), y(v)))
			}
		}
		fmt.Fprintf(&b, `<polyline class="series" data-series="%s" fill="none" stroke="%s" stroke-width="1.6" points="%s"><title>%s</title></polyline>`,
			template.HTMLEscapeString(s.name), s.colour, strings.Join(pts, " "), template.HTMLEscapeString(s.name))
		lx, ly := chartLeft+(i%3)*165, chartH+12+18*(i/3)
		last := math.NaN()
		for _, v := range s.values {
			if !math.IsNaN(v) {
				last = v
			}
		}
		now := "no data"
		if !math.IsNaN(last) {
			now = formatValue(last, c.unit)
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text class="legend" x="%d" y="%d">%s: %s</text>`,
			lx, ly-9, s.colour, lx+14, ly, template.HTMLEscapeString(s.name), template.HTMLEscapeString(now))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// formatValue writes v in its unit: "/s", "s", "B".
func formatValue(v float64, unit string) string {
	switch unit {
	case "s":
		step := time.Second
		switch {
		case v < 0.01:
			step = 10 * time.Microsecond
		case v < 1:
			step = time.Millisecond
		case v < 60:
			step = 100 * time.Millisecond
		}
		return (time.Duration(v * float64(time.Second))).Round(step).String()
	case "B":
		return byteSize(int64(v))
	case "/s":
		return fmt.Sprintf("%.1f/s", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// statusColours are the ticket outcomes' colours, in the order drawn.
var statusColours = []struct{ status, colour string }{
	{"accepted", "#1d6b2f"}, {"duplicate", "#6b6b6b"}, {"rejected", "#a4161a"}, {"insufficient_funds", "#b35c00"},
	{"retry_later", "#6a3d9a"}, {"held", "#0b5cad"},
}

// charts are the overview's charts from the sampler's history.
func (s *sampler) charts() []chart {
	h := s.historyCopy()
	at := make([]time.Time, len(h))
	col := func(f func(p point) float64) []float64 {
		v := make([]float64, len(h))
		for i, p := range h {
			at[i] = p.at
			v[i] = f(p)
		}
		return v
	}
	var tickets []series
	for _, sc := range statusColours {
		tickets = append(tickets, series{sc.status, sc.colour, col(func(p point) float64 { return p.rates[sc.status] })})
	}
	latency := func(f func(p point) float64) []float64 {
		return col(func(p point) float64 {
			if v := f(p); v >= 0 {
				return v
			}
			return math.NaN()
		})
	}
	return []chart{
		{"chart-tickets", "Tickets per second by outcome", "/s", at, tickets},
		{"chart-commit", "Commit latency (bucket bounds)", "s", at, []series{
			{"p50", "#1d6b2f", latency(func(p point) float64 { return p.p50 })},
			{"p99", "#a4161a", latency(func(p point) float64 { return p.p99 })}}},
		{"chart-outbox", "Age of the oldest aggregate not yet upstream", "s", at, []series{
			{"outbox age", "#b35c00", col(func(p point) float64 { return p.outboxAge })}}},
		{"chart-store", "State file size", "B", at, []series{
			{"state file", "#0b5cad", col(func(p point) float64 { return p.storeSize })}}},
	}
}
