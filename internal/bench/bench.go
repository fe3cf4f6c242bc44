// Package bench measures a Farthing gateway against this machine's own
// limits in one run: `farthing bench`. The gateway runs in this process (so
// its memory and CPU can be read); the load generator, `farthing sim`, runs
// in a separate process with its tickets signed before the clock starts.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/internal/sim"
)

// Options shape a run.
type Options struct {
	Runs     int           // saturating runs per figure; the median is reported; default 3
	Duration time.Duration // per run; default 3s
	Devices  int           // per key type; default 50
	Offered  float64       // tickets/s offered to find the maximum; default 30000
	// Registered and Connected shape the memory figure: a registry of
	// Registered devices, Connected of them connected at once; defaults
	// 100,000 and 10,000; Connected < 0 skips it.
	Registered, Connected int
	Out                   io.Writer // progress
	// Pin runs the gateway on the first half of the cores and the load on
	// the other half (see pinning).
	Pin bool
}

// Spread is a median with its min and max over the runs.
type Spread struct {
	Median, Min, Max float64
}

func spread(xs []float64) Spread {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return Spread{}
	}
	return Spread{Median: s[len(s)/2], Min: s[0], Max: s[len(s)-1]}
}

// Latency is receipt latency in milliseconds.
type Latency struct {
	P50, P99, Max float64
}

// EndToEnd is one end-to-end figure.
type EndToEnd struct {
	Name       string  `json:"name"`
	Throughput Spread  `json:"tickets_per_second"`
	AtMax      Latency `json:"latency_ms_at_max"`
	HalfRate   float64 `json:"half_rate"`
	AtHalf     Latency `json:"latency_ms_at_half"`
	RSSMB      float64 `json:"gateway_rss_mb"`
	CPUCores   float64 `json:"gateway_cpu_cores"`
	Limit      string  `json:"limit"`
	Ratio      float64 `json:"ratio"`
	Missing    uint64  `json:"receipts_missing"`
}

// Report is everything one run measured.
type Report struct {
	Host  string `json:"host"`
	Cores int    `json:"cores"`
	// GatewayCores is the cores the gateway (and L1) ran on: all of them,
	// or half with --pin.
	GatewayCores int               `json:"gateway_cores"`
	Go           string            `json:"go"`
	When         time.Time         `json:"when"`
	L1           Spread            `json:"l1_ed25519_verifications_per_second"`
	L2           map[string]Spread `json:"l2_broker_messages_per_second"`
	E            []EndToEnd        `json:"end_to_end"`
	Memory       []Memory          `json:"memory"`
	ElapsedS     float64           `json:"elapsed_seconds"`
}

func freeAddr(network string) string {
	if network == "udp" {
		c, _ := net.ListenPacket("udp", "127.0.0.1:0")
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().String()
}

// Run measures.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Runs <= 0 {
		o.Runs = 3
	}
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	if o.Devices <= 0 {
		o.Devices = 50
	}
	if o.Offered <= 0 {
		o.Offered = 30000
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Registered <= 0 {
		o.Registered = 100_000
	}
	if o.Connected == 0 {
		o.Connected = 10_000
	}
	if o.Pin {
		p, err := startPinning()
		if err != nil {
			return nil, err
		}
		pin = p
		defer func() { pin = nil }()
		fmt.Fprintf(o.Out, "bench: gateway pinned to cores %s, load to cores %s\n", cpuList(p.gateway), cpuList(p.load))
	}
	began := time.Now()
	host, _ := os.Hostname()
	rep := &Report{Host: host, Cores: runtime.NumCPU(), GatewayCores: verifyWorkers(), Go: runtime.Version(), When: began, L2: map[string]Spread{}}
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, "bench: "+format+"\n", args...) }

	// L1.
	var l1 []float64
	for i := 0; i < o.Runs; i++ {
		v, err := VerifyLimit(time.Second)
		if err != nil {
			return nil, err
		}
		l1 = append(l1, v)
	}
	rep.L1 = spread(l1)
	say("L1 Ed25519 decode+verify on %d cores: %.0f/s", rep.GatewayCores, rep.L1.Median)

	// L2, embedded (a bare mochi) and Mosquitto when installed.
	mqAddr := freeAddr("tcp")
	stopBare, err := BareBroker(mqAddr)
	if err != nil {
		return nil, err
	}
	var l2 []float64
	for i := 0; i < o.Runs; i++ {
		v, err := brokerLimit(ctx, mqAddr, 2*time.Second)
		if err != nil {
			stopBare()
			return nil, err
		}
		l2 = append(l2, v)
	}
	stopBare()
	rep.L2["embedded"] = spread(l2)
	say("L2 embedded broker (mochi), QoS 1: %.0f msg/s", rep.L2["embedded"].Median)
	mosq, mosqPID, stopMosq := startMosquitto()
	if mosq != "" {
		defer stopMosq()
		l2 = nil
		for i := 0; i < o.Runs; i++ {
			v, err := brokerLimit(ctx, mosq, 2*time.Second)
			if err != nil {
				return nil, err
			}
			l2 = append(l2, v)
		}
		rep.L2["mosquitto"] = spread(l2)
		say("L2 Mosquitto, QoS 1: %.0f msg/s", rep.L2["mosquitto"].Median)
	}

	// The gateways: embedded broker and DTLS in one; external mode to
	// Mosquitto in another, on the same devices.
	dir, err := os.MkdirTemp("", "farthing-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	if err := provision(data, o.Devices); err != nil {
		return nil, err
	}
	embeddedMQTT, dtlsAddr := freeAddr("tcp"), freeAddr("udp")
	stopGW, err := startGateway(ctx, data, "gw-bench", func(c *gateway.Config) {
		c.MQTT.Listen, c.DTLS.Listen = embeddedMQTT, dtlsAddr
	})
	if err != nil {
		return nil, err
	}
	type config struct {
		name, keys, transport, broker, limit string
		limitValue                           float64
	}
	configs := []config{
		{"embedded broker, HMAC", "hmac", "mqtt", "tcp://" + embeddedMQTT, "E/L2 embedded", rep.L2["embedded"].Median},
		{"embedded broker, Ed25519", "ed25519", "mqtt", "tcp://" + embeddedMQTT, "E/L1", rep.L1.Median},
		{"CoAP/DTLS, HMAC", "hmac", "coaps", dtlsAddr, "E/L2 embedded", rep.L2["embedded"].Median},
	}
	for _, c := range configs {
		e, err := endToEnd(ctx, o, data, c.name, c.keys, c.transport, c.broker, say)
		if err != nil {
			stopGW()
			return nil, err
		}
		e.Limit, e.Ratio = c.limit, e.Throughput.Median/c.limitValue
		rep.E = append(rep.E, e)
	}
	stopGW()
	if mosq != "" {
		ext := filepath.Join(dir, "ext")
		os.MkdirAll(ext, 0o700)
		for _, f := range []string{"tariffs.yaml", "devices.yaml"} {
			b, _ := os.ReadFile(filepath.Join(data, f))
			os.WriteFile(filepath.Join(ext, f), b, 0o600)
		}
		stopExt, err := startGateway(ctx, ext, "gw-bench-ext", func(c *gateway.Config) {
			c.MQTT.Mode, c.MQTT.Broker, c.DTLS.Listen = "external", "tcp://"+mosq, "off"
		})
		if err != nil {
			return nil, err
		}
		for _, c := range []config{
			{"Mosquitto, HMAC", "hmac", "mqtt", "tcp://" + mosq, "E/L2 mosquitto", rep.L2["mosquitto"].Median},
			{"Mosquitto, Ed25519", "ed25519", "mqtt", "tcp://" + mosq, "E/L1", rep.L1.Median},
		} {
			e, err := endToEnd(ctx, o, data, c.name, c.keys, c.transport, c.broker, say)
			if err != nil {
				stopExt()
				return nil, err
			}
			e.Limit, e.Ratio = c.limit, e.Throughput.Median/c.limitValue
			rep.E = append(rep.E, e)
		}
		stopExt()
	}
	if o.Connected > 0 {
		fleet := filepath.Join(dir, "fleet")
		say("memory: writing a registry of %d devices", o.Registered)
		if err := provisionFleet(fleet, o.Registered, filepath.Join(data, "tariffs.yaml")); err != nil {
			return nil, err
		}
		m, err := memoryScenario(ctx, fleet, "embedded broker", o.Registered, o.Connected, "", "")
		if err != nil {
			return nil, err
		}
		rep.Memory = append(rep.Memory, m)
		say("memory, embedded broker: %.0f MB with %d registered, %.0f MB (%.0f MB anonymous, %.0f settled) with %d connected",
			m.IdleRSSMB, m.Registered, m.RSSMB, m.AnonMB, m.SettledMB, m.Connected)
		if mosq != "" {
			// With the soft memory limit an operator would set for a fleet
			// this size (GOMEMLIMIT; see the README), so the figure is the
			// gateway's memory, not the collector's headroom.
			prev := debug.SetMemoryLimit(memLimit)
			name := fmt.Sprintf("Mosquitto (external mode), GOMEMLIMIT=%dMiB", memLimit>>20)
			m, err := memoryScenario(ctx, fleet, name, o.Registered, o.Connected, mosq, mosqPID)
			debug.SetMemoryLimit(prev)
			if err != nil {
				return nil, err
			}
			rep.Memory = append(rep.Memory, m)
			say("memory, Mosquitto: gateway %.0f MB with %d registered, %.0f MB (%.0f MB anonymous, %.0f settled) with %d connected; Mosquitto %.0f MB",
				m.IdleRSSMB, m.Registered, m.RSSMB, m.AnonMB, m.SettledMB, m.Connected, m.BrokerMB)
		}
	}
	rep.ElapsedS = time.Since(began).Seconds()
	return rep, nil
}

// endToEnd runs the simulator o.Runs times at the offered rate (its
// throughput is the maximum sustained), then once at half the median for
// latency, sampling the gateway's memory and CPU.
func endToEnd(ctx context.Context, o Options, data, name, keys, transport, broker string, say func(string, ...any)) (EndToEnd, error) {
	e := EndToEnd{Name: name}
	var tps []float64
	var reps []*sim.Report
	var rss float64
	var cpu float64
	for i := 0; i < o.Runs; i++ {
		mon := startMonitor()
		r, err := runSim(ctx, data, keys, transport, broker, o.Offered, o.Duration)
		m, c := mon.stop()
		if err != nil {
			return e, fmt.Errorf("%s: %w", name, err)
		}
		tps, reps = append(tps, r.Throughput), append(reps, r)
		rss, cpu = max(rss, m), max(cpu, c)
		e.Missing += r.Missing
	}
	e.Throughput = spread(tps)
	for _, r := range reps {
		if r.Throughput == e.Throughput.Median {
			e.AtMax = latency(r)
		}
	}
	e.HalfRate = e.Throughput.Median / 2
	r, err := runSim(ctx, data, keys, transport, broker, e.HalfRate, o.Duration)
	if err != nil {
		return e, err
	}
	e.AtHalf, e.RSSMB, e.CPUCores = latency(r), rss, cpu
	say("E %s: %.0f tickets/s (%.0f–%.0f); p99 %.1f ms at max, %.1f ms at half", name, e.Throughput.Median,
		e.Throughput.Min, e.Throughput.Max, e.AtMax.P99, e.AtHalf.P99)
	return e, nil
}

func latency(r *sim.Report) Latency {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return Latency{P50: ms(r.P50), P99: ms(r.P99), Max: ms(r.Max)}
}

// runSim runs `farthing sim` in its own process and reads its JSON report.
func runSim(ctx context.Context, data, keys, transport, broker string, rate float64, d time.Duration) (*sim.Report, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"sim", "--data", data, "--type", keys, "--rate", strconv.FormatFloat(rate, 'f', 0, 64),
		"--duration", d.String(), "--inflight", "4", "--json", "--transport", transport}
	if transport == "coaps" {
		args = append(args, "--coap", broker, "--inflight", "1")
	} else {
		args = append(args, "--broker", broker)
	}
	r, err := startSim(command(ctx, self, args...))
	if err != nil {
		return nil, err
	}
	<-r.done
	return r.report()
}

// provision writes tariffs, n HMAC and n Ed25519 devices and their keys.
func provision(data string, n int) error {
	if err := os.MkdirAll(filepath.Join(data, "device-keys"), 0o700); err != nil {
		return err
	}
	tariffs := "tariffs:\n  - {id: energy, currency: EUR, unit: Wh, period: month, timezone: Europe/Berlin,\n" +
		"     tiers: [{up_to: 1000000, price: 0.39 EUR, per: 1000}, {price: 0.34 EUR, per: 1000}],\n" +
		"     time_of_use: [{name: peak, days: weekdays, from: \"17:00\", to: \"21:00\", price: 0.49 EUR, per: 1000}]}\n"
	if err := os.WriteFile(filepath.Join(data, "tariffs.yaml"), []byte(tariffs), 0o600); err != nil {
		return err
	}
	var rf gateway.RegistryFile
	for _, typ := range []string{"hmac", "ed25519"} {
		for i := 1; i <= n; i++ {
			e, s, err := gateway.NewDevice(fmt.Sprintf("%s-%04d", typ, i), typ, "fleet", "utility", map[string]string{"energy_wh": "energy"})
			if err != nil {
				return err
			}
			rf.Devices = append(rf.Devices, e)
			if s.Private != nil {
				k, _ := (&keyfile.Key{Private: s.Private}).EncodePrivate()
				if err := keyfile.WriteNew(filepath.Join(data, "device-keys", e.ID+".key"), k, 0o600); err != nil {
					return err
				}
			}
		}
	}
	return gateway.WriteRegistryFile(filepath.Join(data, "devices.yaml"), &rf)
}

// startGateway runs a gateway on data in this process.
func startGateway(ctx context.Context, data, id string, tune func(*gateway.Config)) (func(), error) {
	cfg, err := gateway.LoadConfigWithDataDir("", data)
	if err != nil {
		return nil, err
	}
	cfg.GatewayID = id
	cfg.HTTP.Listen = "off"
	cfg.Accounts = []gateway.AccountConfig{{ID: "fleet", Kind: "postpaid", Currency: "EUR", CreditLimit: "1000000000"}}
	cfg.Providers = []gateway.ProviderConfig{{ID: "utility", Window: time.Minute}}
	// The whole simulated fleet comes from one address (loopback): the
	// per-source limits, which keep one source from flooding a door, would
	// measure themselves instead of the gateway.
	cfg.DTLS.HandshakeRate, cfg.DTLS.HandshakeBurst = 1e6, 1e6
	cfg.MQTT.ConnectRate, cfg.MQTT.ConnectBurst = 1e6, 1e6
	tune(cfg)
	g, err := gateway.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	gctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(gctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		cancel()
		return nil, err
	}
	return func() { cancel(); <-done }, nil
}

// memLimit is the soft memory limit of the external-mode memory figure.
const memLimit = 100 << 20

// startMosquitto runs Mosquitto on a free port, if it is installed, with
// its open-file limit raised to the hard limit (it holds one per client).
// It returns the address and the process id.
func startMosquitto() (string, string, func()) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
			return "", "", func() {}
		}
		bin = "/usr/sbin/mosquitto"
	}
	addr := freeAddr("tcp")
	_, port, _ := net.SplitHostPort(addr)
	conf, _ := os.CreateTemp("", "mosquitto-*.conf")
	user := ""
	if os.Geteuid() == 0 {
		user = "user root\n"
	}
	fmt.Fprintf(conf, "%slistener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\nset_tcp_nodelay true\n", user, port)
	conf.Close()
	argv := onGatewayCores([]string{"/bin/sh", "-c", `ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" -c "$1"`, bin, conf.Name()})
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		os.Remove(conf.Name())
		return "", "", func() {}
	}
	for i := 0; i < 50; i++ {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr, strconv.Itoa(cmd.Process.Pid), func() { cmd.Process.Kill(); cmd.Wait(); os.Remove(conf.Name()) }
}

// monitor samples this process's resident memory and CPU.
type monitor struct {
	stopc    chan struct{}
	wg       sync.WaitGroup
	maxRSS   float64
	start    time.Time
	cpuStart time.Duration
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssMB() float64 {
	rss, _ := memStatus("self")
	return rss
}

func startMonitor() *monitor {
	m := &monitor{stopc: make(chan struct{}), start: time.Now(), cpuStart: cpuTime()}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			m.maxRSS = max(m.maxRSS, rssMB())
			select {
			case <-t.C:
			case <-m.stopc:
				return
			}
		}
	}()
	return m
}

// stop returns the peak RSS (MB) and the mean CPU used, in cores.
func (m *monitor) stop() (float64, float64) {
	close(m.stopc)
	m.wg.Wait()
	return m.maxRSS, float64(cpuTime()-m.cpuStart) / float64(time.Since(m.start))
}
