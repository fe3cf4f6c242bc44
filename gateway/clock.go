package gateway

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The gateway watches its own clock. A box without a real-time clock
// boots with an old time and jumps when NTP syncs; until then every
// device looks wrong to it. It compares its clock with the newest time
// in its own books (at start and until it has caught up), reads the
// kernel's synchronisation state (adjtimex: STA_UNSYNC, maxerror), and
// watches which way devices' clock_skew refusals go: most devices' clocks
// off the same way means the gateway's is; and it sets an HTTP upstream's
// Date header against its own clock. Each finding is said once at
// WARN or ERROR, and once more when it clears, with the likely cause; it
// is in farthing_clock_* and in /readyz's detail.
type clockWatch struct {
	mu     sync.Mutex
	newest int64 // the books' newest gateway time at start (Unix ms)
	device int64 // and their newest device time (devices' clocks drift: it counts past 10 minutes)
	// upstream is the last HTTP upstream's clock less the process's when
	// it answered (its Date header); upstreamAt when (process clock).
	upstream   time.Duration
	upstreamAt time.Time
	state      map[string]bool // finding → in force
	details    map[string]string
	m          *clockMetrics
}

// clockMetrics are farthing_clock_*.
type clockMetrics struct {
	suspect, unsynced, maxError, behindBooks, upstreamOffset prometheus.Gauge
}

func newClockMetrics(reg prometheus.Registerer) *clockMetrics {
	g := func(name, help string) prometheus.Gauge {
		m := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		reg.MustRegister(m)
		return m
	}
	return &clockMetrics{
		suspect: g("farthing_clock_suspect", "1 while the gateway believes its own clock is wrong: behind its books, or most devices refused clock_skew the same way."),
		unsynced: g("farthing_clock_unsynchronized",
			"1 while the kernel says the clock is not synchronised (adjtimex STA_UNSYNC), 0 when it is, -1 where it cannot tell."),
		maxError:    g("farthing_clock_maxerror_seconds", "The kernel's maximum error of the clock (adjtimex maxerror)."),
		behindBooks: g("farthing_clock_behind_books_seconds", "How far the clock is behind the newest time in the gateway's own books (0: not behind)."),
		upstreamOffset: g("farthing_clock_upstream_offset_seconds",
			"An HTTP upstream's clock (its Date header, to the second) less the gateway's, from its last answer in the last ten minutes; 0 without one."),
	}
}

// The findings, with the log line and the /readyz line of each.
const (
	findingBehindBooks = "behind_books"
	findingUnsynced    = "unsynchronized"
	findingDevices     = "devices_one_way"
	findingUpstream    = "upstream_date"
)

// check looks at the clock at now: the books' newest time, the kernel's
// state, the devices' skew refusals (ahead, behind: devices in the last
// minutes). It returns the lines to log: what started and what cleared.
func (w *clockWatch) check(now time.Time, kernel kernelClock, ahead, behind int) (starts, clears []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == nil {
		w.state, w.details = map[string]bool{}, map[string]string{}
	}
	set := func(finding string, on bool, detail string) {
		switch {
		case on && !w.state[finding]:
			starts = append(starts, detail)
		case !on && w.state[finding]:
			clears = append(clears, finding)
		}
		w.state[finding] = on
		w.details[finding] = detail
	}
	newest, behindBy := w.newest, time.Duration(w.newest-now.UnixMilli())*time.Millisecond
	if d := time.Duration(w.device-now.UnixMilli()) * time.Millisecond; d > 10*time.Minute && d > behindBy {
		newest, behindBy = w.device, d
	}
	set(findingBehindBooks, behindBy > time.Minute, fmt.Sprintf("the clock reads %s, %v before the newest time in the gateway's own books (%s): "+
		"likely a box without a real-time clock that booted with an old time, NTP not synced yet", now.UTC().Format(time.RFC3339),
		behindBy.Round(time.Second), time.UnixMilli(newest).UTC().Format(time.RFC3339)))
	w.m.behindBooks.Set(max(behindBy, 0).Seconds())
	switch {
	case !kernel.known:
		w.m.unsynced.Set(-1)
	case kernel.unsynced:
		w.m.unsynced.Set(1)
	default:
		w.m.unsynced.Set(0)
	}
	w.m.maxError.Set(kernel.maxError.Seconds())
	set(findingUnsynced, kernel.known && kernel.unsynced, fmt.Sprintf("the kernel says the clock is not synchronised (STA_UNSYNC, maximum error %v): "+
		"NTP has not synced it yet; order the gateway after time-sync.target", kernel.maxError))
	total := ahead + behind
	oneWay, way := total >= 3 && (ahead*5 >= total*4 || behind*5 >= total*4), "behind"
	if behind > ahead {
		way = "ahead of"
	}
	set(findingDevices, oneWay, fmt.Sprintf("%d of %d devices refused clock_skew in the last minutes had clocks off the same way: "+
		"this gateway's clock is likely %s theirs (no real-time clock? NTP not synced?)", max(ahead, behind), total, way))
	// An HTTP upstream's Date (to the second) in the last ten minutes, set
	// against the gateway's clock as it was when that answer came.
	var off time.Duration
	if !w.upstreamAt.IsZero() && time.Since(w.upstreamAt) < 10*time.Minute {
		off = w.upstream - now.Sub(time.Now()) // the gateway's clock may not be the process's (Config.Clock)
	}
	set(findingUpstream, off > 2*time.Minute || off < -2*time.Minute, fmt.Sprintf("an HTTP upstream's clock (its Date header) is %v off this gateway's: "+
		"one of the two is wrong (no real-time clock here? NTP not synced?)", off.Round(time.Second)))
	w.m.upstreamOffset.Set(off.Seconds())
	suspect := 0.0
	if w.state[findingBehindBooks] || w.state[findingDevices] || w.state[findingUpstream] {
		suspect = 1
	}
	w.m.suspect.Set(suspect)
	return starts, clears
}

// upstreamDate takes an HTTP upstream's Date header (httpsink.Config.OnDate):
// its clock, and when the answer came by the process's.
func (w *clockWatch) upstreamDate(server, received time.Time) {
	w.mu.Lock()
	w.upstream, w.upstreamAt = server.Sub(received), received
	w.mu.Unlock()
}

// detail is /readyz's line on the clock, "" while nothing is wrong.
func (w *clockWatch) detail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var parts []string
	for _, f := range []string{findingBehindBooks, findingDevices, findingUpstream, findingUnsynced} {
		if w.state[f] {
			parts = append(parts, w.details[f])
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "clock: " + strings.Join(parts, "; ")
}

// watchClock runs the clock's checks (housekeeping, every tick) and logs
// what started (ERROR for the books, WARN for the rest) and what cleared.
func (g *Gateway) watchClock(now time.Time) {
	ahead, behind := g.ingest.SkewSummary()
	starts, clears := g.clock.check(now, readKernelClock(), ahead, behind)
	for _, s := range starts {
		if strings.Contains(s, "own books") {
			g.log.Error("the gateway's clock is wrong: "+s, "clock", now.UTC().Format(time.RFC3339))
			continue
		}
		g.log.Warn("the gateway's clock may be wrong: "+s, "clock", now.UTC().Format(time.RFC3339))
	}
	for _, c := range clears {
		g.log.Info("the gateway's clock is right again", "finding", c, "clock", now.UTC().Format(time.RFC3339))
	}
}
