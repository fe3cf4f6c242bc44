package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/sim"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/registry"
)

// Memory is the gateway's resident memory with a large fleet: many devices
// registered, a share of them connected at once.
type Memory struct {
	Name       string  `json:"name"`
	Registered int     `json:"registered"`
	Connected  int     `json:"connected"`
	IdleRSSMB  float64 `json:"rss_mb_registered_only"`
	RSSMB      float64 `json:"rss_mb_connected"`
	AnonMB     float64 `json:"anon_rss_mb_connected"` // without the mapped state file's pages
	// SettledMB is the anonymous memory with the fleet connected and idle
	// after the gateway's periodic memory release (housekeeping, once a
	// minute), which the bench triggers instead of waiting for it.
	SettledMB float64 `json:"anon_rss_mb_connected_settled"`
	BrokerMB  float64 `json:"broker_rss_mb,omitempty"`
	// PerConnKB is what a connection costs the gateway: its resident
	// memory with the fleet connected and idle, after the release, less
	// that with it registered only, per connection.
	PerConnKB  float64 `json:"kb_per_connection"`
	settledRSS float64
	Sent       uint64 `json:"tickets_sent"`
	Missing    uint64 `json:"receipts_missing"`
}

// memStatus reads VmRSS and RssAnon of a process ("self" for this one), in
// MB.
func memStatus(pid string) (rss, anon float64) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "RssAnon:":
			anon = kb / 1024
		}
	}
	return rss, anon
}

// provisionFleet writes a registry of n HMAC devices (HMAC devices need no
// key files: the simulator reads their secrets from the registry) and a
// copy of the tariff file.
func provisionFleet(data string, n int, tariffs string) error {
	if err := os.MkdirAll(filepath.Join(data, "device-keys"), 0o700); err != nil {
		return err
	}
	b, err := os.ReadFile(tariffs)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(data, "tariffs.yaml"), b, 0o600); err != nil {
		return err
	}
	rf := registry.File{Devices: make([]registry.Entry, 0, n)}
	meters := map[string]string{"energy_wh": "energy"}
	for i := 1; i <= n; i++ {
		e, _, err := registry.NewDevice(fmt.Sprintf("fleet-%06d", i), "hmac", "fleet", "utility", meters)
		if err != nil {
			return err
		}
		rf.Devices = append(rf.Devices, e)
	}
	return registry.WriteFile(filepath.Join(data, "devices.yaml"), &rf)
}

// memoryScenario starts a gateway over a registry of registered devices,
// reads its memory, then connects `connected` of them (the simulator keeps
// their sessions open and idle after a short load) and reads it again.
// broker is "" for the embedded broker, else the external broker's
// address (with brokerPID, to read its memory too).
func memoryScenario(ctx context.Context, data, name string, registered, connected int, broker, brokerPID string) (Memory, error) {
	m := Memory{Name: name, Registered: registered, Connected: connected}
	addr := freeAddr("tcp")
	stop, err := startGateway(ctx, data, "gw-bench-mem", func(c *gateway.Config) {
		c.DTLS.Listen = "off"
		if broker == "" {
			c.MQTT.Listen = addr
		} else {
			c.MQTT.Mode, c.MQTT.Broker = "external", "tcp://"+broker
		}
	})
	if err != nil {
		return m, err
	}
	defer stop()
	if broker == "" {
		broker = addr
	}
	debug.FreeOSMemory()
	m.IdleRSSMB, _ = memStatus("self")

	exe, err := os.Executable()
	if err != nil {
		return m, err
	}
	const hold = 4 * time.Second
	cmd := command(ctx, exe, "sim", "--data", data, "--type", "hmac", "--devices", strconv.Itoa(connected),
		"--rate", "2000", "--duration", "2s", "--inflight", "1", "--hold", hold.String(), "--json", "--broker", "tcp://"+broker)
	return m, holdAndSample(cmd, &m, hold, brokerPID)
}

// holdAndSample runs the simulator command, which connects its devices,
// sends a ticket from each and holds the sessions idle for hold, and
// samples this process's memory (and the broker's, if brokerPID is set)
// while they are held: first as it is, then after a release.
func holdAndSample(cmd *exec.Cmd, m *Memory, hold time.Duration, brokerPID string) error {
	out, err := startSim(cmd)
	if err != nil {
		return err
	}
	// Sample while the sessions are held, all devices connected and idle
	// after their tickets: first as they are, then after a release.
	var heldSince time.Time
	released := false
	for {
		select {
		case <-out.done:
			r, err := out.report()
			if err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			m.Sent, m.Missing = r.Sent, r.Missing
			m.PerConnKB = (m.settledRSS - m.IdleRSSMB) * 1024 / float64(m.Connected)
			return nil
		case <-time.After(250 * time.Millisecond):
			if !out.holding() {
				continue
			}
			if heldSince.IsZero() {
				heldSince = time.Now()
			}
			rss, anon := memStatus("self")
			if time.Since(heldSince) < hold/2 {
				m.RSSMB, m.AnonMB = max(m.RSSMB, rss), max(m.AnonMB, anon)
			} else {
				if !released {
					debug.FreeOSMemory()
					released = true
					rss, anon = memStatus("self")
				}
				m.SettledMB, m.settledRSS = max(m.SettledMB, anon), max(m.settledRSS, rss)
			}
			if brokerPID != "" {
				b, _ := memStatus(brokerPID)
				m.BrokerMB = max(m.BrokerMB, b)
			}
		}
	}
}

// simRun is a simulator process whose progress is watched.
type simRun struct {
	done   chan struct{}
	err    error
	stdout bytes.Buffer
	hold   atomic.Bool // the simulator reported that it holds its sessions
	tail   []string    // the last lines of its standard error
	// measured is this process's CPU time and the wall clock from the
	// simulator's sending line to its answered line: the gateway's work on
	// the tickets, not on the sessions set up before and closed after.
	cpu0, cpu1, wall0, wall1 atomic.Int64
}

// busy returns the CPU time this process used while the simulator sent
// and was answered, and that time's length.
func (r *simRun) busy() (cpu, wall time.Duration) {
	return time.Duration(r.cpu1.Load() - r.cpu0.Load()), time.Duration(r.wall1.Load() - r.wall0.Load())
}

// startSim starts the simulator command; done closes when it has exited.
func startSim(cmd *exec.Cmd) (*simRun, error) {
	r := &simRun{done: make(chan struct{})}
	cmd.Stdout = &r.stdout
	pr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			switch line := sc.Text(); {
			case strings.Contains(line, "holding"):
				r.hold.Store(true)
			case line == sim.ProgressSending:
				r.cpu0.Store(int64(cpuTime()))
				r.wall0.Store(time.Now().UnixNano())
			case line == sim.ProgressDone:
				r.cpu1.Store(int64(cpuTime()))
				r.wall1.Store(time.Now().UnixNano())
			}
			if r.tail = append(r.tail, sc.Text()); len(r.tail) > 16 {
				r.tail = r.tail[1:]
			}
		}
		r.err = cmd.Wait()
		close(r.done)
	}()
	return r, nil
}

func (r *simRun) holding() bool { return r.hold.Load() }

func (r *simRun) report() (*sim.Report, error) {
	if r.err != nil {
		return nil, fmt.Errorf("farthing sim: %v: %s", r.err, strings.Join(r.tail, "\n"))
	}
	var rep sim.Report
	if err := json.Unmarshal(r.stdout.Bytes(), &rep); err != nil {
		return nil, fmt.Errorf("farthing sim output: %w", err)
	}
	return &rep, nil
}
