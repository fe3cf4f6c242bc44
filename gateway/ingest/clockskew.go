package ingest

import (
	"sync"
	"time"
)

// skewWatch remembers, per device, the direction of its last clock_skew
// refusal in the last skewWindow: when most devices are refused in the
// same direction, the likely fault is the gateway's own clock, not
// theirs (see Ingest.SkewSummary).
type skewWatch struct {
	mu   sync.Mutex
	last map[string]skewMark
}

type skewMark struct {
	ahead bool  // the device's time was ahead of the gateway's
	at    int64 // Unix ms, gateway clock
}

// skewWindow is how long a device's refusal counts in the summary;
// maxSkewDevices bounds the devices remembered.
const (
	skewWindow     = 5 * time.Minute
	maxSkewDevices = 10_000
)

func (w *skewWatch) note(device string, ahead bool, now int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last = map[string]skewMark{}
	}
	if _, ok := w.last[device]; !ok && len(w.last) >= maxSkewDevices {
		return
	}
	w.last[device] = skewMark{ahead: ahead, at: now}
}

// SkewSummary counts the devices refused clock_skew in the last five
// minutes, by the direction their clocks were off: ahead of the gateway's,
// or behind it.
func (in *Ingest) SkewSummary() (ahead, behind int) {
	w := &in.skew
	cutoff := in.now().Add(-skewWindow).UnixMilli()
	w.mu.Lock()
	defer w.mu.Unlock()
	for d, m := range w.last {
		switch {
		case m.at < cutoff:
			delete(w.last, d)
		case m.ahead:
			ahead++
		default:
			behind++
		}
	}
	return ahead, behind
}
