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

	"github.com/farthing-iot/farthing/cmd/farthing/internal/sim"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/internal/keyfile"
)

// Options shape a run.
type Options struct {
	Runs     int           // saturating runs per figure; the median is reported; default 3
	Duration time.Duration // per saturating run; default 5s
	// HalfDuration is the run at half the maximum rate, for the latency
	// tail; default 20s, reported by slices of 5 s.
	HalfDuration time.Duration
	Devices      int     // per key type; default 1000
	Offered      float64 // tickets/s offered to find the maximum; default 30000
	// InFlight is the tickets a device may have without a receipt, "N" or
	// "A-B" to spread the fleet over A..B; default "1-4". A CoAP device has
	// one request out at a time.
	InFlight string
	// Registered and Connected shape the memory figure: a registry of
	// Registered devices, Connected of them connected at once over MQTT;
	// defaults 100,000 and 10,000; Connected < 0 skips it. Sessions is
	// how many idle DTLS sessions the CoAP memory figure opens; default
	// 2,000.
	Registered, Connected, Sessions int
	Out                             io.Writer // progress
	// Pin runs the gateway on the first half of the cores and the load on
	// the other half (see pinning).
	Pin bool
	// Only, if set, runs only these parts: l1, l2, l3, hmac, ed25519,
	// payword, coap, mosquitto, memory, wear (an E figure runs its limit
	// too).
	Only []string
	// WearDuration is each wear row's run at a site's rate; default 30s.
	// The full-rate wear rows run for Duration.
	WearDuration time.Duration

	slice time.Duration // the simulator's latency slices; default 5s
}

// Parts are the names Options.Only takes.
var Parts = []string{"l1", "l2", "l3", "hmac", "ed25519", "payword", "coap", "mosquitto", "memory", "wear"}

func (o *Options) wants(part string) bool {
	if len(o.Only) == 0 {
		return true
	}
	for _, p := range o.Only {
		if p == part {
			return true
		}
	}
	return false
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
	// HalfP99 is the spread of p99 over the 5-second slices of the run at
	// half rate.
	HalfP99  Spread  `json:"p99_ms_at_half_by_slice"`
	RSSMB    float64 `json:"gateway_rss_mb"`
	CPUCores float64 `json:"gateway_cpu_cores"`
	// CPUPerTicket is the gateway process's CPU time (user and system) per
	// ticket answered at the maximum, in microseconds: the median run's.
	CPUPerTicket float64 `json:"gateway_cpu_us_per_ticket"`
	Devices      int     `json:"devices"`
	InFlight     string  `json:"inflight"`
	Limit        string  `json:"limit"`
	Ratio        float64 `json:"ratio"`
	Missing      uint64  `json:"receipts_missing"`
}

// Report is everything one run measured.
type Report struct {
	Host  string `json:"host"`
	Cores int    `json:"cores"`
	// GatewayCores is the cores the gateway (and L1, L2's broker, L3's
	// server) ran on: all of them, or half with --pin.
	GatewayCores int               `json:"gateway_cores"`
	Pinned       bool              `json:"pinned"`
	Go           string            `json:"go"`
	When         time.Time         `json:"when"`
	L1           Spread            `json:"l1_ed25519_verifications_per_second"`
	L2           map[string]Spread `json:"l2_broker_messages_per_second"`
	L3           Spread            `json:"l3_coap_dtls_requests_per_second"`
	E            []EndToEnd        `json:"end_to_end"`
	Memory       []Memory          `json:"memory"`
	Wear         []Wear            `json:"wear"`
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

func (o *Options) defaults() {
	if o.Runs <= 0 {
		o.Runs = 3
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.HalfDuration <= 0 {
		o.HalfDuration = 20 * time.Second
	}
	if o.Devices <= 0 {
		o.Devices = 1000
	}
	if o.Offered <= 0 {
		o.Offered = 30000
	}
	if o.InFlight == "" {
		o.InFlight = "1-4"
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
	if o.Sessions <= 0 {
		o.Sessions = 2000
	}
	if o.WearDuration <= 0 {
		o.WearDuration = 30 * time.Second
	}
}

// Run measures.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
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
	r := &benchRun{ctx: ctx, o: o, rep: &Report{Host: host, Cores: runtime.NumCPU(), GatewayCores: verifyWorkers(), Pinned: o.Pin,
		Go: runtime.Version(), When: began, L2: map[string]Spread{}}}
	dir, err := os.MkdirTemp("", "farthing-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r.dir, r.data = dir, filepath.Join(dir, "data")
	if err := provision(r.data, o.Devices); err != nil {
		return nil, err
	}
	if err := r.limits(); err != nil {
		return nil, err
	}
	if o.wants("l2") || o.wants("mosquitto") || o.wants("memory") {
		var stopMosq func()
		r.mosq, r.mosqPID, stopMosq = startMosquitto()
		defer stopMosq()
	}
	for _, step := range []func() error{r.mosquittoLimit, r.endToEnd, r.mosquittoEndToEnd, r.memory, r.wear} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	r.rep.ElapsedS = time.Since(began).Seconds()
	return r.rep, nil
}

// benchRun is one farthing bench: its options, its provisioned devices
// (data) and the report it fills.
type benchRun struct {
	ctx           context.Context
	o             Options
	rep           *Report
	dir, data     string
	mosq, mosqPID string // a running Mosquitto's address and pid; "" without one
}

// say prints one line of progress.
func (r *benchRun) say(format string, args ...any) {
	fmt.Fprintf(r.o.Out, "bench: "+format+"\n", args...)
}

// runs measures f o.Runs times and returns the spread.
func (r *benchRun) runs(f func() (float64, error)) (Spread, error) {
	var xs []float64
	for i := 0; i < r.o.Runs; i++ {
		v, err := f()
		if err != nil {
			return Spread{}, err
		}
		xs = append(xs, v)
	}
	return spread(xs), nil
}

// limits measures the parts alone: Ed25519 verification (L1), the
// embedded broker (L2) and a bare CoAP/DTLS server (L3).
func (r *benchRun) limits() error {
	ctx, o, rep, data, say, runs := r.ctx, r.o, r.rep, r.data, r.say, r.runs
	var err error
	if o.wants("l1") || o.wants("ed25519") {
		if rep.L1, err = runs(func() (float64, error) { return VerifyLimit(2 * time.Second) }); err != nil {
			return err
		}
		say("L1 Ed25519 decode+verify, batched, on %d cores: %.0f/s", rep.GatewayCores, rep.L1.Median)
	}
	if o.wants("l2") || o.wants("hmac") || o.wants("payword") {
		mqAddr := freeAddr("tcp")
		stopBare, err := BareBroker(mqAddr)
		if err != nil {
			return err
		}
		rep.L2["embedded"], err = runs(func() (float64, error) { return brokerLimit(ctx, mqAddr, 3*time.Second) })
		stopBare()
		if err != nil {
			return err
		}
		say("L2 embedded broker (mochi), QoS 1: %.0f msg/s", rep.L2["embedded"].Median)
	}
	if o.wants("l3") || o.wants("coap") {
		if rep.L3, err = runs(func() (float64, error) { return coapLimit(ctx, o, data, 3*time.Second) }); err != nil {
			return err
		}
		say("L3 bare CoAP/DTLS server, %d sessions: %.0f requests/s", o.Devices, rep.L3.Median)
	}
	return nil
}

// mosquittoLimit measures Mosquitto alone (L2), when it runs.
func (r *benchRun) mosquittoLimit() error {
	ctx, o, rep, mosq, say, runs := r.ctx, r.o, r.rep, r.mosq, r.say, r.runs
	var err error
	if mosq != "" && (o.wants("l2") || o.wants("mosquitto")) {
		if rep.L2["mosquitto"], err = runs(func() (float64, error) { return brokerLimit(ctx, mosq, 3*time.Second) }); err != nil {
			return err
		}
		say("L2 Mosquitto, QoS 1: %.0f msg/s", rep.L2["mosquitto"].Median)
	}

	return nil
}

// benchConfig is one end-to-end configuration: its part's name, its keys,
// transport and broker, and the limit its throughput is compared with.
type benchConfig struct {
	part, name, keys, transport, broker, limit string
	limitValue                                 float64
}

// endToEnd measures the gateway end to end: the embedded broker and DTLS
// in one gateway, for each configuration asked for.
func (r *benchRun) endToEnd() error {
	ctx, o, rep, data := r.ctx, r.o, r.rep, r.data
	// The gateway: embedded broker and DTLS in one; external mode to
	// Mosquitto in another, on the same devices.
	embeddedMQTT, dtlsAddr := freeAddr("tcp"), freeAddr("udp")
	var configs []benchConfig
	for _, c := range []benchConfig{
		{"hmac", "embedded broker, HMAC", "hmac", "mqtt", "tcp://" + embeddedMQTT, "E/L2 embedded", rep.L2["embedded"].Median},
		{"ed25519", "embedded broker, Ed25519", "ed25519", "mqtt", "tcp://" + embeddedMQTT, "E/L1", rep.L1.Median},
		{"payword", "embedded broker, payword", "payword", "mqtt", "tcp://" + embeddedMQTT, "E/L2 embedded", rep.L2["embedded"].Median},
		{"coap", "CoAP/DTLS, HMAC", "hmac", "coaps", dtlsAddr, "E/L3", rep.L3.Median},
	} {
		if o.wants(c.part) {
			configs = append(configs, c)
		}
	}
	if len(configs) > 0 {
		stopGW, err := startGateway(ctx, data, "gw-bench", func(c *gateway.Config) {
			c.MQTT.Listen, c.DTLS.Listen = embeddedMQTT, dtlsAddr
		})
		if err != nil {
			return err
		}
		err = r.measure(configs)
		stopGW()
		return err
	}
	return nil
}

// measure runs each configuration end to end against the gateway that
// runs, and adds its figures, with its ratio to its limit, to the report.
func (r *benchRun) measure(configs []benchConfig) error {
	for _, c := range configs {
		e, err := endToEnd(r.ctx, r.o, r.data, c.name, c.keys, c.transport, c.broker, r.say)
		if err != nil {
			return err
		}
		e.Limit, e.Ratio = c.limit, e.Throughput.Median/c.limitValue
		r.rep.E = append(r.rep.E, e)
	}
	return nil
}

// mosquittoEndToEnd measures a gateway in external mode on Mosquitto, on
// the same devices.
func (r *benchRun) mosquittoEndToEnd() error {
	ctx, o, rep, data, mosq := r.ctx, r.o, r.rep, r.data, r.mosq
	if mosq == "" || !o.wants("mosquitto") {
		return nil
	}
	ext := filepath.Join(r.dir, "ext")
	if err := os.MkdirAll(ext, 0o700); err != nil {
		return err
	}
	for _, f := range []string{"tariffs.yaml", "devices.yaml"} {
		b, err := os.ReadFile(filepath.Join(data, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(ext, f), b, 0o600); err != nil {
			return err
		}
	}
	stopExt, err := startGateway(ctx, ext, "gw-bench-ext", func(c *gateway.Config) {
		c.MQTT.Mode, c.MQTT.Broker, c.DTLS.Listen = "external", "tcp://"+mosq, "off"
	})
	if err != nil {
		return err
	}
	err = r.measure([]benchConfig{
		{"mosquitto", "Mosquitto, HMAC", "hmac", "mqtt", "tcp://" + mosq, "E/L2 mosquitto", rep.L2["mosquitto"].Median},
	})
	stopExt()
	return err
}

// memory measures the gateway's memory with a large registry and many
// connected devices: embedded broker, CoAP/DTLS and, when it runs,
// Mosquitto.
func (r *benchRun) memory() error {
	ctx, o, rep, dir, data, mosq, mosqPID, say := r.ctx, r.o, r.rep, r.dir, r.data, r.mosq, r.mosqPID, r.say
	if o.Connected > 0 && o.wants("memory") {
		fleet := filepath.Join(dir, "fleet")
		say("memory: writing a registry of %d devices", o.Registered)
		if err := provisionFleet(fleet, o.Registered, filepath.Join(data, "tariffs.yaml")); err != nil {
			return err
		}
		m, err := memoryScenario(ctx, fleet, "embedded broker", o.Registered, o.Connected, "", "")
		if err != nil {
			return err
		}
		rep.Memory = append(rep.Memory, m)
		say("memory, embedded broker: %.0f MB with %d registered, %.0f MB (%.0f MB anonymous, %.0f settled) with %d connected: %.1f KB per connection",
			m.IdleRSSMB, m.Registered, m.RSSMB, m.AnonMB, m.SettledMB, m.Connected, m.PerConnKB)
		m, err = dtlsMemoryScenario(ctx, fleet, o.Registered, o.Sessions)
		if err != nil {
			return err
		}
		rep.Memory = append(rep.Memory, m)
		say("memory, CoAP/DTLS: %.0f MB with %d registered, %.0f MB with %d idle sessions: %.1f KB per session",
			m.IdleRSSMB, m.Registered, m.RSSMB, m.Connected, m.PerConnKB)
		if mosq != "" {
			// With the soft memory limit an operator would set for a fleet
			// this size (GOMEMLIMIT; see the README), so the figure is the
			// gateway's memory, not the collector's headroom.
			prev := debug.SetMemoryLimit(memLimit)
			name := fmt.Sprintf("Mosquitto (external mode), GOMEMLIMIT=%dMiB", memLimit>>20)
			m, err := memoryScenario(ctx, fleet, name, o.Registered, o.Connected, mosq, mosqPID)
			debug.SetMemoryLimit(prev)
			if err != nil {
				return err
			}
			rep.Memory = append(rep.Memory, m)
			say("memory, Mosquitto: gateway %.0f MB with %d registered, %.0f MB (%.0f MB anonymous, %.0f settled) with %d connected; Mosquitto %.0f MB",
				m.IdleRSSMB, m.Registered, m.RSSMB, m.AnonMB, m.SettledMB, m.Connected, m.BrokerMB)
		}
	}
	return nil
}

// endToEnd runs the simulator o.Runs times at the offered rate (its
// throughput is the maximum sustained), then once at half the median for
// latency, sampling the gateway's memory and CPU.
func endToEnd(ctx context.Context, o Options, data, name, keys, transport, broker string, say func(string, ...any)) (EndToEnd, error) {
	e := EndToEnd{Name: name, Devices: o.Devices, InFlight: o.InFlight}
	if transport == "coaps" {
		e.InFlight = "1"
	}
	var tps, perTicket []float64
	var reps []*sim.Report
	var rss float64
	var cpu float64
	for i := 0; i < o.Runs; i++ {
		mon := startMonitor()
		r, busy, wall, err := runSim(ctx, o, data, keys, transport, broker, o.Offered, o.Duration, false)
		m := mon.stop()
		if err != nil {
			return e, fmt.Errorf("%s: %w", name, err)
		}
		tps, reps = append(tps, r.Throughput), append(reps, r)
		perTicket = append(perTicket, busy.Seconds()*1e6/max(1, float64(r.Sent-r.Missing)))
		rss, cpu = max(rss, m), max(cpu, busy.Seconds()/max(wall.Seconds(), 1e-9))
		e.Missing += r.Missing
	}
	e.Throughput = spread(tps)
	for i, r := range reps {
		if r.Throughput == e.Throughput.Median {
			e.AtMax, e.CPUPerTicket = latency(r), perTicket[i]
		}
	}
	e.HalfRate = e.Throughput.Median / 2
	r, _, _, err := runSim(ctx, o, data, keys, transport, broker, e.HalfRate, o.HalfDuration, false)
	if err != nil {
		return e, err
	}
	var p99s []float64
	for _, s := range r.Slices {
		p99s = append(p99s, float64(s.P99)/1e6)
	}
	e.AtHalf, e.HalfP99, e.RSSMB, e.CPUCores = latency(r), spread(p99s), rss, cpu
	say("E %s: %.0f tickets/s (%.0f–%.0f), %.1f µs of gateway CPU per ticket; p99 %.1f ms at max, %.1f ms at half (slices %.1f–%.1f)",
		name, e.Throughput.Median, e.Throughput.Min, e.Throughput.Max, e.CPUPerTicket, e.AtMax.P99, e.AtHalf.P99, e.HalfP99.Min, e.HalfP99.Max)
	return e, nil
}

func latency(r *sim.Report) Latency {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return Latency{P50: ms(r.P50), P99: ms(r.P99), Max: ms(r.Max)}
}

// runSim runs `farthing sim` in its own process (on the load's cores
// when pinning) and reads its JSON report. bare is L3's run: any answer
// counts.
func runSim(ctx context.Context, o Options, data, keys, transport, broker string, rate float64, d time.Duration, bare bool) (*sim.Report, time.Duration, time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, 0, 0, err
	}
	payword := keys == "payword" // HMAC devices that send paywords
	if payword {
		keys = "hmac"
	}
	args := []string{"sim", "--data", data, "--type", keys, "--rate", strconv.FormatFloat(rate, 'f', 0, 64),
		"--duration", d.String(), "--inflight", o.InFlight, "--json", "--transport", transport,
		"--devices", strconv.Itoa(o.Devices)}
	if bare {
		args = append(args, "--bare")
	}
	if payword {
		args = append(args, "--payword")
	}
	if o.slice > 0 {
		args = append(args, "--slice", o.slice.String())
	}
	if transport == "coaps" {
		args = append(args, "--coap", broker, "--inflight", "1")
	} else {
		args = append(args, "--broker", broker)
	}
	r, err := startSim(command(ctx, self, args...))
	if err != nil {
		return nil, 0, 0, err
	}
	<-r.done
	rep, err := r.report()
	busy, wall := r.busy()
	return rep, busy, wall, err
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
	var rf registry.File
	for _, typ := range []string{"hmac", "ed25519"} {
		for i := 1; i <= n; i++ {
			e, s, err := registry.NewDevice(fmt.Sprintf("%s-%04d", typ, i), typ, "fleet", "utility", map[string]string{"energy_wh": "energy"})
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
	return registry.WriteFile(filepath.Join(data, "devices.yaml"), &rf)
}

// startGateway runs a gateway on data in this process.
func startGateway(ctx context.Context, data, id string, tune func(*gateway.Config)) (func(), error) {
	_, stop, err := startGatewayOf(ctx, data, id, tune)
	return stop, err
}

// startGatewayOf is startGateway, also returning the gateway.
func startGatewayOf(ctx context.Context, data, id string, tune func(*gateway.Config)) (*gateway.Gateway, func(), error) {
	cfg, err := gateway.LoadConfigWithDataDir("", data)
	if err != nil {
		return nil, nil, err
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
		return nil, nil, err
	}
	gctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(gctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		cancel()
		return nil, nil, err
	}
	return g, func() { cancel(); <-done }, nil
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

// monitor samples this process's resident memory.
type monitor struct {
	stopc  chan struct{}
	wg     sync.WaitGroup
	maxRSS float64
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
	m := &monitor{stopc: make(chan struct{})}
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

// stop returns the peak RSS (MB).
func (m *monitor) stop() float64 {
	close(m.stopc)
	m.wg.Wait()
	return m.maxRSS
}
