package gateway

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
)

// gcHeadroom is the least garbage the collector lets the gateway make
// between collections. The gateway's live heap is small next to its
// allocation rate (a small fleet keeps a few MB live while tickets pass
// through at tens of MB/s), so Go's default, collecting whenever the heap
// has doubled, meant about 95 collections a second at 12,800 tickets/s
// (embedded broker, HMAC, 50 devices). With this floor on the headroom it
// is about 13 a second, and throughput rose to 14,500-15,500 tickets/s in
// the same runs, for some 35 MB more resident memory. A large live heap (a
// big registry) is collected as by default.
const gcHeadroom = 32 << 20

// gcTuner sets the collector's percentage from the live heap so that the
// headroom is at least gcHeadroom. It does nothing when GOGC is set.
type gcTuner struct {
	off     bool
	percent int
	sample  []metrics.Sample
}

func newGCTuner() *gcTuner {
	return &gcTuner{off: os.Getenv("GOGC") != "", percent: 100,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
}

// tune adjusts the percentage to the live heap of the last collection.
func (t *gcTuner) tune() {
	if t.off {
		return
	}
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	p := gcPercent(t.sample[0].Value.Uint64())
	if p != t.percent {
		debug.SetGCPercent(p)
		t.percent = p
	}
}

// gcPercent is the GOGC that gives a live heap of live bytes at least
// gcHeadroom of headroom: 100 (Go's default) or more, at most 600, in
// steps of 50 so that small changes of the live heap change nothing.
func gcPercent(live uint64) int {
	if live == 0 {
		return 100
	}
	p := int(gcHeadroom * 100 / live)
	p = (p + 49) / 50 * 50
	return min(max(p, 100), 600)
}
