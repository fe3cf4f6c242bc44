package console

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// sampleSpan is how many one-second samples the console's rates cover.
const sampleSpan = 10

// sampler keeps the last sampleSpan seconds of the ticket counters and the
// commit-latency histogram, read from the gateway's own metrics once a
// second, for the console's rates and quantiles.
type sampler struct {
	m     prometheus.Gatherer
	mu    sync.Mutex
	ring  []sample
	gauge map[string]float64
	// history is the last hour, a point every historyStep (chart.go).
	history   []point
	lastPoint time.Time
}

type sample struct {
	at      time.Time
	tickets map[string]uint64 // "status/reason" → count
	commits uint64
	buckets []uint64 // cumulative, by bound
	bounds  []float64
}

func newSampler(m prometheus.Gatherer) *sampler { return &sampler{m: m} }

// run samples once a second until ctx ends.
func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		s.take()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// take reads the metrics once and keeps the sample.
func (s *sampler) take() {
	s.add(s.gather())
}

// add keeps a sample (taken at sm.at) and, one historyStep after the
// last, a point of the history.
func (s *sampler) add(sm sample, gauge map[string]float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ring = append(s.ring, sm)
	if len(s.ring) > sampleSpan+1 {
		s.ring = s.ring[1:]
	}
	s.gauge = gauge
	if len(s.ring) >= 2 && sm.at.Sub(s.lastPoint) >= historyStep {
		s.history = append(s.history, pointOf(s.ring[0], sm, gauge))
		if len(s.history) > historyLen {
			s.history = s.history[1:]
		}
		s.lastPoint = sm.at
	}
}

// pointOf is the history's point between two samples.
func pointOf(first, last sample, gauge map[string]float64) point {
	p := point{at: last.at, rates: map[string]float64{}, p50: -1, p99: -1,
		outboxAge: gauge["farthing_oldest_unforwarded_seconds"], storeSize: gauge["farthing_store_bytes"]}
	secs := last.at.Sub(first.at).Seconds()
	for k, n := range last.tickets {
		status, _, _ := strings.Cut(k, "/")
		if secs > 0 && n >= first.tickets[k] {
			p.rates[status] += float64(n-first.tickets[k]) / secs
		}
	}
	if n := last.commits - first.commits; n > 0 && len(last.buckets) == len(first.buckets) {
		top := last.bounds[len(last.bounds)-1] // past the last bound: drawn at it
		p.p50, p.p99 = min(quantileValue(first, last, n, 0.50), top), min(quantileValue(first, last, n, 0.99), top)
	}
	return p
}

// historyCopy returns the history's points, oldest first.
func (s *sampler) historyCopy() []point {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]point(nil), s.history...)
}

// gather reads the metrics.
func (s *sampler) gather() (sample, map[string]float64) {
	// Gather returns what it could collect along with an error about the
	// rest; the console shows what there is.
	fams, _ := s.m.Gather()
	sm := sample{at: time.Now(), tickets: map[string]uint64{}}
	gauge := map[string]float64{}
	for _, f := range fams {
		switch f.GetName() {
		case "farthing_tickets_total":
			for _, m := range f.GetMetric() {
				sm.tickets[labelOf(m, "status")+"/"+labelOf(m, "reason")] = uint64(m.GetCounter().GetValue())
			}
		case "farthing_commit_seconds":
			for _, m := range f.GetMetric() {
				h := m.GetHistogram()
				sm.commits = h.GetSampleCount()
				for _, b := range h.GetBucket() {
					sm.buckets = append(sm.buckets, b.GetCumulativeCount())
					sm.bounds = append(sm.bounds, b.GetUpperBound())
				}
			}
		case "farthing_store_inuse_bytes", "farthing_store_bytes", "farthing_disk_free_bytes", "farthing_oldest_unforwarded_seconds":
			for _, m := range f.GetMetric() {
				gauge[f.GetName()] = m.GetGauge().GetValue()
			}
		}
	}
	return sm, gauge
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// rateView is what the overview shows of the samples.
type rateView struct {
	keys                 []string // "status/reason", sorted, those with any ticket since start
	perSecond            map[string]float64
	total                map[string]uint64
	commits              uint64
	commitP50, commitP99 string
	gauges               map[string]float64
}

// rates works out the rates between the oldest kept sample and one taken
// now (so that the totals since start are current; the ring keeps its
// one-second spacing).
func (s *sampler) rates() rateView {
	now, gauge := s.gather()
	s.mu.Lock()
	defer s.mu.Unlock()
	v := rateView{perSecond: map[string]float64{}, total: map[string]uint64{}, commitP50: "no commit", commitP99: "no commit", gauges: gauge}
	first, last := now, now
	if len(s.ring) > 0 {
		first = s.ring[0]
	}
	secs := last.at.Sub(first.at).Seconds()
	for k, n := range last.tickets {
		if n == 0 {
			continue
		}
		v.keys = append(v.keys, k)
		v.total[k] = n
		if secs > 0 {
			v.perSecond[k] = float64(n-first.tickets[k]) / secs
		}
	}
	sort.Strings(v.keys)
	v.commits = last.commits - first.commits
	if v.commits > 0 && len(last.buckets) == len(first.buckets) {
		v.commitP50 = quantileBound(first, last, v.commits, 0.50)
		v.commitP99 = quantileBound(first, last, v.commits, 0.99)
	}
	return v
}

// quantileBound is the upper bound of the histogram bucket holding the q
// quantile of the commits between two samples: "≤ 4 ms".
func quantileBound(first, last sample, n uint64, q float64) string {
	v := quantileValue(first, last, n, q)
	if math.IsInf(v, 1) {
		return fmt.Sprintf("> %s", time.Duration(last.bounds[len(last.bounds)-1]*float64(time.Second)))
	}
	return "≤ " + time.Duration(v*float64(time.Second)).String()
}

// quantileValue is the upper bound, in seconds, of the histogram bucket
// holding the q quantile of the n commits between two samples; +Inf past
// the last bound.
func quantileValue(first, last sample, n uint64, q float64) float64 {
	want := uint64(q*float64(n) + 0.999999)
	for i, b := range last.buckets {
		if b-first.buckets[i] >= want {
			return last.bounds[i]
		}
	}
	return math.Inf(1)
}
