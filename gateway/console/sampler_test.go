package console

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/farthing-iot/farthing/gateway/ingest"
	"github.com/farthing-iot/farthing/protocol"
)

// TestSamplerRates: the console's rates are the ticket counters' and the
// commit histogram's growth between the oldest and newest sample.
func TestSamplerRates(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := ingest.NewMetrics(reg)
	s := newSampler(reg)
	s.take()
	accepted := m.Tickets.WithLabelValues(protocol.StatusAccepted.String(), "")
	for range 30 {
		accepted.Inc()
		m.Commit.Observe(0.003)
	}
	m.Commit.Observe(0.9)
	time.Sleep(100 * time.Millisecond)
	s.take()
	v := s.rates()
	k := protocol.StatusAccepted.String() + "/"
	if v.total[k] != 30 || v.perSecond[k] < 30 || len(v.keys) != 1 || v.keys[0] != k {
		t.Fatalf("rates: keys %q, total %d, per second %.1f; want only %q, 30, > 30", v.keys, v.total[k], v.perSecond[k], k)
	}
	if v.commits != 31 || !strings.HasPrefix(v.commitP50, "≤ ") || v.commitP50 == v.commitP99 {
		t.Fatalf("commits %d, p50 %q, p99 %q; want 31 and a p99 bucket above the p50's", v.commits, v.commitP50, v.commitP99)
	}
}
