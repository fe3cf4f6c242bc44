package console

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/farthing-iot/farthing/gateway/ingest"
	"github.com/farthing-iot/farthing/protocol"
)

// TestChartsFromHistory: the sampler keeps a point per historyStep, and
// each chart draws its series from them as SVG with no script.
func TestChartsFromHistory(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := ingest.NewMetrics(reg)
	s := newSampler(reg)
	base := time.Now()
	for i := range 4 {
		m.Tickets.WithLabelValues(protocol.StatusAccepted.String(), "").Add(50)
		m.Commit.Observe(0.002)
		sm, g := s.gather()
		sm.at = base.Add(time.Duration(i) * historyStep)
		s.add(sm, g)
	}
	cs := s.charts()
	if len(cs) != 4 || len(cs[0].at) != 3 {
		t.Fatalf("%d charts over %d points; want 4 over 3", len(cs), len(cs[0].at))
	}
	svg := string(cs[0].svg())
	if !strings.HasPrefix(svg, "<svg") || strings.Contains(svg, "<script") || !strings.Contains(svg, `data-series="accepted"`) ||
		!strings.Contains(svg, "accepted: 5.0/s") {
		t.Fatalf("tickets chart:\n%s", svg)
	}
	if got := formatValue(10.968857, "s"); got != "11s" {
		t.Errorf("formatValue(10.968857 s) = %q; want 11s", got)
	}
}
