package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/internal/procio"
)

// Wear is one figure of what a ticket costs the storage: the bytes the
// gateway's process wrote to disk (write_bytes of /proc/self/io: the
// pages it dirtied, counted once each time they go to disk; the
// filesystem's own journal is not in it) and the fsyncs the state file
// took, per accepted ticket, at a site's rate or at full rate.
type Wear struct {
	Name      string  `json:"name"`
	Transport string  `json:"transport"`
	Offered   float64 `json:"offered_per_second"` // 0: as fast as the gateway answers
	// CommitInterval is commit.interval: "" for the default (each ticket
	// commits as soon as the committer is free).
	CommitInterval string  `json:"commit_interval"`
	Devices        int     `json:"devices"`
	Seconds        float64 `json:"seconds"`
	Tickets        uint64  `json:"tickets"`
	BytesWritten   uint64  `json:"bytes_written"`
	Syncs          uint64  `json:"fsyncs"`
	// BytesPerTicket and SyncsPerTicket are the figures; WriteRate is the
	// bytes written per second of the run.
	BytesPerTicket float64 `json:"bytes_written_per_ticket"`
	SyncsPerTicket float64 `json:"fsyncs_per_ticket"`
	WriteRate      float64 `json:"bytes_written_per_second"`
}

// wearConfig is one wear run: a site's rate (offered > 0) or full rate.
type wearConfig struct {
	name, transport string
	offered         float64
	interval        time.Duration
}

// wearConfigs are the wear rows: 20 devices at 20 tickets/s, a site's
// rate, over MQTT and CoAP, and with a commit interval for flash; then as
// fast as the gateway answers.
var wearConfigs = []wearConfig{
	{"MQTT, 20 tickets/s", "mqtt", 20, 0},
	{"CoAP/DTLS, 20 tickets/s", "coaps", 20, 0},
	{"MQTT, 20 tickets/s, commit.interval 1s", "mqtt", 20, time.Second},
	{"MQTT, full rate", "mqtt", 0, 0},
	{"CoAP/DTLS, full rate", "coaps", 0, 0},
}

// wearDevices is the site the wear rows simulate.
const wearDevices = 20

// wear measures the bytes written and the fsyncs per ticket, each row on a
// fresh state file (a copy of data without one).
func (r *benchRun) wear() error {
	if !r.o.wants("wear") {
		return nil
	}
	for i, c := range wearConfigs {
		w, err := r.wearRun(c, fmt.Sprintf("wear-%d", i))
		if err != nil {
			return fmt.Errorf("wear, %s: %w", c.name, err)
		}
		r.rep.Wear = append(r.rep.Wear, w)
		r.say("wear %s: %.0f tickets, %.0f bytes written and %.2f fsyncs per ticket (%.0f bytes/s)",
			c.name, float64(w.Tickets), w.BytesPerTicket, w.SyncsPerTicket, w.WriteRate)
	}
	return nil
}

// wearRun runs one wear row on its own gateway and state file, and counts
// until the gateway has stopped: its last checkpoint is in the figure.
func (r *benchRun) wearRun(c wearConfig, sub string) (Wear, error) {
	w := Wear{Name: c.name, Transport: c.transport, Offered: c.offered, Devices: wearDevices}
	if c.interval > 0 {
		w.CommitInterval = c.interval.String()
	}
	data, err := copyProvisioned(r.data, r.dir, sub)
	if err != nil {
		return w, err
	}
	addr, dtls := freeAddr("tcp"), freeAddr("udp")
	gw, stop, err := startGatewayOf(r.ctx, data, "gw-wear", func(cfg *gateway.Config) {
		cfg.MQTT.Listen, cfg.DTLS.Listen = addr, dtls
		cfg.Commit.Interval = c.interval
	})
	if err != nil {
		return w, err
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	broker, rate, d := "tcp://"+addr, c.offered, r.o.WearDuration
	if c.transport == "coaps" {
		broker = dtls
	}
	if rate == 0 {
		rate, d = r.o.Offered, r.o.Duration
	}
	o := r.o
	o.Devices, o.InFlight = wearDevices, "1"
	if c.offered == 0 {
		o.Devices, o.InFlight = r.o.Devices, r.o.InFlight
		w.Devices = o.Devices
	}
	before, st0 := procio.WriteBytes(), gw.Store().Stats()
	start := time.Now()
	rep, _, _, err := runSim(r.ctx, o, data, "hmac", c.transport, broker, rate, d, false)
	if err != nil {
		return w, err
	}
	// Stopped, so that what waits for a checkpoint is written and counted.
	stop()
	stopped = true
	after, st1 := procio.WriteBytes(), gw.Store().Stats()
	w.Seconds = time.Since(start).Seconds()
	w.Tickets = rep.Accepted
	w.BytesWritten, w.Syncs = after-before, st1.Syncs-st0.Syncs
	if w.Tickets == 0 {
		return w, fmt.Errorf("no ticket was accepted")
	}
	w.BytesPerTicket = float64(w.BytesWritten) / float64(w.Tickets)
	w.SyncsPerTicket = float64(w.Syncs) / float64(w.Tickets)
	w.WriteRate = float64(w.BytesWritten) / w.Seconds
	return w, nil
}

// copyProvisioned makes a new data directory dir/sub with what provision
// wrote in data (tariffs, devices, their secrets and the gateway's key)
// and no state file: files are copied, directories linked.
func copyProvisioned(data, dir, sub string) (string, error) {
	out := filepath.Join(dir, sub)
	if err := os.MkdirAll(out, 0o700); err != nil {
		return "", err
	}
	ents, err := os.ReadDir(data)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		src, dst := filepath.Join(data, e.Name()), filepath.Join(out, e.Name())
		switch {
		case e.IsDir():
			if err := os.Symlink(src, dst); err != nil {
				return "", err
			}
		case e.Type().IsRegular() && !strings.HasPrefix(e.Name(), gateway.StateFile):
			b, err := os.ReadFile(src)
			if err != nil {
				return "", err
			}
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				return "", err
			}
		}
	}
	return out, nil
}
