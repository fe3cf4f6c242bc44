package console

import (
	"context"
	"fmt"
	"sort"
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
	sm, gauge := s.gather()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ring = append(s.ring, sm)
	if len(s.ring) > sampleSpan+1 {
		s.ring = s.ring[1:]
	}
	s.gauge = gauge
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
		case "farthing_store_inuse_bytes", "farthing_disk_free_bytes", "farthing_oldest_unforwarded_seconds":
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
	want := uint64(q*float64(n) + 0.999999)
	for i, b := range last.buckets {
		if b-first.buckets[i] >= want {
			return "≤ " + time.Duration(last.bounds[i]*float64(time.Second)).String()
		}
	}
	return fmt.Sprintf("> %s", time.Duration(last.bounds[len(last.bounds)-1]*float64(time.Second)))
}
