package ingest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"
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

// FraudConfig sets the automatic suspension of devices. A suspended
// device's tickets are refused (reason device_suspended) until an
// operator resumes it (farthing device resume).
type FraudConfig struct {
	// SuspendAfter suspends a device with this many tickets held within
	// Window; 0 (the default) never does.
	SuspendAfter int `yaml:"suspend_after"`
	// Window is the time signs are counted over; default 1h.
	Window time.Duration `yaml:"window"`
	// Clones is "log" (the default: a suspected clone is counted and
	// logged) or "suspend" (it is also suspended).
	Clones string `yaml:"clones"`
	// CloneSignals is how many signs of a clone within Window make a
	// suspected clone; default 5. Signs: the device's MQTT session taken
	// over from another address, a second DTLS session from another
	// address, a ticket answered superseded (two seq streams interleaving).
	CloneSignals int `yaml:"clone_signals"`
}

// Normalize fills in the defaults and checks the settings; the error
// names the setting (fraud.clones, …).
func (c *FraudConfig) Normalize() error {
	if c.Window == 0 {
		c.Window = time.Hour
	}
	if c.CloneSignals == 0 {
		c.CloneSignals = 5
	}
	switch c.Clones {
	case "":
		c.Clones = "log"
	case "log", "suspend":
	default:
		return fmt.Errorf("fraud.clones: %q: want log or suspend", c.Clones)
	}
	if c.SuspendAfter < 0 || c.CloneSignals < 0 || c.Window < 0 {
		return errors.New("fraud: suspend_after, clone_signals and window must not be negative")
	}
	return nil
}

// loadSuspended installs the fraud settings and loads the suspended
// devices from the books.
func (in *Ingest) loadSuspended() error {
	list, err := in.books.Suspensions()
	if err != nil {
		return err
	}
	f := &in.fraud
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg, f.held, f.signs = in.cfg.Fraud, map[string][]time.Time{}, map[string][]time.Time{}
	sus := map[string]bool{}
	for _, s := range list {
		sus[s.Device] = true
	}
	f.suspended.Store(&sus)
	return nil
}

// Suspended reports whether the device is suspended: its messages are
// refused and its sessions refused or closed.
func (in *Ingest) Suspended(device string) bool {
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
	if f.held == nil || f.cfg.SuspendAfter == 0 || in.Suspended(device) {
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
	if f.signs == nil || in.Suspended(device) {
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
	if in.cfg.OnSuspend != nil {
		in.cfg.OnSuspend(device)
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
