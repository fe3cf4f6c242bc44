package gateway

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
)

// fraudWatch counts, per device, the tickets held and the signs of a
// clone within the configured window, and keeps the set of suspended
// devices (durable in the books; read here on every ticket).
type fraudWatch struct {
	mu    sync.Mutex // guards cfg, held and signs, and serializes changes of suspended
	cfg   FraudConfig
	held  map[string][]time.Time // recent holds, per device
	signs map[string][]time.Time // recent clone signs, per device
	// suspended is read on every ticket without a lock: a map replaced,
	// never changed, when a device is suspended or resumed (rare).
	suspended atomic.Pointer[map[string]bool]
}

// Clone signs, as counted in farthing_fraud_events_total.
const (
	SignTakeover   = "clone_sign_mqtt_takeover"  // the MQTT session taken over from another address
	SignDTLS       = "clone_sign_dtls_sessions"  // a second DTLS session from another address
	SignSuperseded = "clone_sign_superseded_seq" // a ticket never seen, below the device's last seq
)

// SetFraud installs the fraud settings and loads the suspended devices
// from the books.
func (in *Ingest) SetFraud(cfg FraudConfig) error {
	list, err := ledger.Suspensions(in.books.Store())
	if err != nil {
		return err
	}
	f := &in.fraud
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg, f.held, f.signs = cfg, map[string][]time.Time{}, map[string][]time.Time{}
	sus := map[string]bool{}
	for _, s := range list {
		sus[s.Device] = true
	}
	f.suspended.Store(&sus)
	return nil
}

func (in *Ingest) suspended(device string) bool {
	m := in.fraud.suspended.Load()
	return m != nil && (*m)[device]
}

// setSuspended records device as suspended or not, replacing the map.
// The caller holds f.mu.
func (f *fraudWatch) setSuspended(device string, on bool) {
	next := map[string]bool{}
	if m := f.suspended.Load(); m != nil {
		maps.Copy(next, *m)
	}
	if on {
		next[device] = true
	} else {
		delete(next, device)
	}
	f.suspended.Store(&next)
}

// recent appends now to device's times in m, drops those older than the
// window, and returns how many remain. A device with none left is
// deleted, so the maps hold only devices seen within the window.
func (f *fraudWatch) recent(m map[string][]time.Time, device string, now time.Time) int {
	ts := append(m[device], now)
	cut := 0
	for cut < len(ts) && now.Sub(ts[cut]) > f.cfg.Window {
		cut++
	}
	ts = ts[cut:]
	m[device] = ts
	return len(ts)
}

// noteHeld counts a held ticket of device and suspends the device when
// it reached the configured number within the window.
func (in *Ingest) noteHeld(device string) {
	f := &in.fraud
	f.mu.Lock()
	if f.held == nil || f.cfg.SuspendAfter == 0 || in.suspended(device) {
		f.mu.Unlock()
		return
	}
	n := f.recent(f.held, device, in.now())
	f.mu.Unlock()
	if n >= f.cfg.SuspendAfter {
		in.suspend(device, "suspended_holds", "too many tickets held")
	}
}

// NoteCloneSign counts one sign that device is cloned (SignTakeover,
// SignDTLS, SignSuperseded). Enough of them within the window make a
// suspected clone: counted, logged, and suspended if the settings say so.
func (in *Ingest) NoteCloneSign(device, sign, detail string) {
	in.metrics.Fraud.WithLabelValues(sign).Inc()
	in.log.Info("sign of a cloned device", "device", device, "sign", sign, "detail", detail)
	f := &in.fraud
	f.mu.Lock()
	if f.signs == nil || in.suspended(device) {
		f.mu.Unlock()
		return
	}
	n := f.recent(f.signs, device, in.now())
	suspected := n == f.cfg.CloneSignals
	suspend := n >= f.cfg.CloneSignals && f.cfg.Clones == "suspend"
	f.mu.Unlock()
	if suspected {
		in.metrics.Fraud.WithLabelValues("clone_suspected").Inc()
		in.log.Warn("device may be cloned: its key is in use in two places", "device", device, "signs", n,
			"window", f.cfg.Window.String(), "last", sign)
	}
	if suspend {
		in.suspend(device, "suspended_clone", "suspected clone")
	}
}

// suspend records device's suspension in the books and refuses its
// tickets from now on.
func (in *Ingest) suspend(device, event, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := in.books.Suspend(ctx, device, why); err != nil {
		in.log.Error("device suspension not recorded", "device", device, "error", err)
		return
	}
	f := &in.fraud
	f.mu.Lock()
	f.setSuspended(device, true)
	delete(f.held, device)
	delete(f.signs, device)
	f.mu.Unlock()
	if in.onSuspend != nil {
		in.onSuspend(device)
	}
	in.metrics.Fraud.WithLabelValues(event).Inc()
	in.log.Error("device suspended: its tickets are refused until an operator resumes it (farthing device resume)",
		"device", device, "why", why)
}

// Resume lifts a device's suspension (an operator's call, audited).
func (in *Ingest) Resume(ctx context.Context, device, credential string) (bool, error) {
	was, err := in.books.Resume(ctx, device, credential)
	if err != nil {
		return false, err
	}
	f := &in.fraud
	f.mu.Lock()
	f.setSuspended(device, false)
	f.mu.Unlock()
	if was {
		in.log.Warn("device resumed", "device", device, "credential", credential)
	}
	return was, nil
}
