// Package sim drives a fleet of simulated devices against a gateway over
// MQTT and reports what came back: the engine of `farthing sim` and
// `farthing demo`.
//
// Every ticket is signed before the clock starts, so signing (Ed25519 costs
// ~30 µs) does not take CPU from the gateway being measured. Each device is
// a real paho client with its own credentials.
package sim

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/coapdev"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

// Config describes a run.
type Config struct {
	Broker  string // tcp://host:port
	Prefix  string // topic prefix; default farthing/v1
	Devices []Device
	// Rate is tickets per second over all devices.
	Rate float64
	// Duration of sending.
	Duration time.Duration
	// InFlight is how many tickets a device may have without a receipt;
	// default 4. With InFlightMin > 0 the devices spread over
	// InFlightMin..InFlight: device i may have InFlightMin + i mod
	// (InFlight-InFlightMin+1).
	InFlight, InFlightMin int
	// Drain is how long to wait for receipts after sending; default 10s.
	Drain time.Duration
	// Progress, if set, gets a line a second.
	Progress io.Writer
	// Transport is "mqtt" (default) or "coaps"; CoAPAddr is the gateway's
	// DTLS address for coaps.
	Transport string
	CoAPAddr  string
	// Hold keeps the devices' sessions open and idle this long after the
	// run, so their cost at the gateway can be measured.
	Hold time.Duration
	// Bare counts any answer to a ticket as its receipt, unread: for a
	// server that answers without a gateway behind it (the bench's L3).
	Bare bool
	// Slice is the length of the slices the latency is also reported by
	// (Report.Slices), so its spread over a run shows; default 5s.
	Slice time.Duration
	// Sending, if set, is called once every device is connected, as the
	// sending starts: the run's clock starts there.
	Sending func()
	// Payword makes each device a payword device: its first message
	// commits to a hash chain (10 units of its first meter a step), and
	// each ticket after it is the chain's next payword.
	Payword bool
}

// The progress lines that mark the measured part of a run: after them
// the clock runs, and it stops before the done line (sessions are set
// up before it and closed after).
const (
	ProgressSending = "sim: sending"
	ProgressDone    = "sim: answered"
)

// Slice is the receipt latency of the receipts that came in one slice of
// a run.
type Slice struct {
	Receipts uint64        `json:"receipts"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
}

// Device is a simulated device: its registry entry and its secrets (an
// Ed25519 device's private key is not in the registry).
type Device struct {
	Entry   registry.Entry
	Secrets registry.Secrets
}

// Report is the outcome of a run.
type Report struct {
	Devices           int               `json:"devices"`
	Sent              uint64            `json:"sent"`
	Accepted          uint64            `json:"accepted"`
	Duplicates        uint64            `json:"duplicates"`
	InsufficientFunds uint64            `json:"insufficient_funds"`
	RetryLater        uint64            `json:"retry_later"`
	Rejected          map[string]uint64 `json:"rejected"`
	// Held counts receipts "held" by a plausibility rule, by rule.
	Held          map[string]uint64 `json:"held,omitempty"`
	BadReceipts   uint64            `json:"bad_receipts"`
	Missing       uint64            `json:"receipts_missing"`
	Elapsed       time.Duration     `json:"elapsed_ns"`
	Throughput    float64           `json:"receipts_per_second"`
	P50, P99, Max time.Duration
	// Charged sums the charges of accepted receipts, per currency.
	Charged map[string]uint64 `json:"charged_nanos"`
	// Handshakes per second while the DTLS sessions were set up (coaps).
	HandshakesPerSecond float64 `json:"handshakes_per_second,omitempty"`
	// Slices is the latency by slice of Config.Slice, in order; a last
	// slice shorter than half of one is left out.
	Slices []Slice `json:"slices,omitempty"`
}

// String formats the report for people.
func (r *Report) String() string {
	s := fmt.Sprintf("devices %d, sent %d, accepted %d, duplicates %d, insufficient funds %d, retry later %d, bad receipts %d, receipts missing %d\n",
		r.Devices, r.Sent, r.Accepted, r.Duplicates, r.InsufficientFunds, r.RetryLater, r.BadReceipts, r.Missing)
	reasons := make([]string, 0, len(r.Rejected))
	for k := range r.Rejected {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		s += fmt.Sprintf("rejected %s: %d\n", k, r.Rejected[k])
	}
	rules := make([]string, 0, len(r.Held))
	for k := range r.Held {
		rules = append(rules, k)
	}
	sort.Strings(rules)
	for _, k := range rules {
		s += fmt.Sprintf("held %s: %d (farthing quarantine list)\n", k, r.Held[k])
	}
	if r.HandshakesPerSecond > 0 {
		s += fmt.Sprintf("DTLS sessions set up at %.0f handshakes/s\n", r.HandshakesPerSecond)
	}
	s += fmt.Sprintf("throughput %.0f receipts/s over %v\nreceipt latency p50 %v, p99 %v, max %v\n",
		r.Throughput, r.Elapsed.Round(time.Millisecond), r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond))
	return s
}

type simDevice struct {
	entry    registry.Entry
	password string
	receipts *protocol.HMAC
	tickets  [][]byte
	base     uint64 // seq of tickets[0]
	sentAt   []atomic.Int64
	got      []atomic.Bool
	slots    chan struct{}
	client   paho.Client
	mu       sync.Mutex // guards receipts (HMAC state)
	coap     *udpClient.Conn
	psk      []byte
	signer   protocol.Signer
	meters   []string
	answered int  // Config.Bare: tickets answered, in order; guarded by the report's lock
	payword  bool // Config.Payword
}

// Run runs the simulation until it has sent for Duration and drained, or
// ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg}
	r.rep.Devices, r.rep.Rejected, r.rep.Charged = len(cfg.Devices), map[string]uint64{}, map[string]uint64{}
	if err := r.prepare(); err != nil {
		return nil, err
	}
	closeDevices, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer closeDevices()
	if err := r.signAll(); err != nil {
		return nil, err
	}
	if cfg.Sending != nil {
		cfg.Sending()
	}
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "%s\n", ProgressSending)
	}
	sendCtx, stopSending := context.WithTimeout(ctx, cfg.Duration)
	defer stopSending()
	sendingDone := r.sendAll(ctx, sendCtx)
	r.wait(ctx, sendingDone)
	elapsed := time.Since(r.start)
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "%s\n", ProgressDone)
	}
	if cfg.Hold > 0 {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "sim: holding %d idle sessions for %v\n", len(r.devs), cfg.Hold)
		}
		select {
		case <-time.After(cfg.Hold):
		case <-ctx.Done():
		}
	}
	return r.report(elapsed), nil
}

// defaults checks the configuration and fills in what it leaves out.
func (cfg *Config) defaults() error {
	if len(cfg.Devices) == 0 {
		return fmt.Errorf("sim: no devices")
	}
	if cfg.Rate <= 0 || cfg.Duration <= 0 {
		return fmt.Errorf("sim: rate and duration must be positive")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = protocol.DefaultTopicPrefix
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 4
	}
	if cfg.InFlightMin <= 0 || cfg.InFlightMin > cfg.InFlight {
		cfg.InFlightMin = cfg.InFlight
	}
	if cfg.Slice <= 0 {
		cfg.Slice = 5 * time.Second
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 10 * time.Second
	}
	return nil
}

// run is one simulation: its devices and what their receipts said.
type run struct {
	cfg      Config
	devs     []*simDevice
	epoch    uint64
	start    time.Time     // when the first ticket is due
	interval time.Duration // between one device's tickets
	sent     atomic.Uint64
	received atomic.Uint64

	mu  sync.Mutex // guards rep, lat and at
	rep Report
	lat []time.Duration
	at  []int64 // when each latency's receipt came, unix ns
}

// prepare makes each device's simulator with the seqs it will use.
func (r *run) prepare() error {
	cfg := r.cfg
	perDevice := int(cfg.Rate*cfg.Duration.Seconds()/float64(len(cfg.Devices))) + 1
	r.epoch = uint64(time.Now().Unix())
	seqBase := uint64(time.Now().UnixMicro())
	if cfg.Payword {
		// A payword ticket's seq is chain number × 2^32 + index. The
		// run's chain number is the clock in units of 2^20 µs (about a
		// second; it fits 31 bits until 2041), so each run's is above the
		// last's, and its seqs above any a run without paywords used.
		seqBase = (seqBase >> 20) << 32
	}
	r.devs = make([]*simDevice, len(cfg.Devices))
	for i, e := range cfg.Devices {
		inflight := cfg.InFlightMin + i%(cfg.InFlight-cfg.InFlightMin+1)
		d, err := prepare(e.Entry, e.Secrets, perDevice, seqBase, inflight)
		if err != nil {
			return err
		}
		d.payword = cfg.Payword
		r.devs[i] = d
	}
	return nil
}

// onReceipt checks a device's receipt and counts it.
func (r *run) onReceipt(d *simDevice, b []byte) {
	now := time.Now()
	if r.cfg.Bare {
		onBare(d, now, &r.mu, &r.received, &r.lat, &r.at)
		return
	}
	var env protocol.Envelope
	rc := protocol.Receipt{Device: d.entry.ID}
	err := protocol.ParseReceipt(b, &env, &rc)
	if err == nil {
		d.mu.Lock()
		err = env.Verify(d.receipts, nil)
		d.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	idx := rc.Seq - d.base
	if err != nil || rc.Device != d.entry.ID || rc.Seq < d.base || idx >= uint64(len(d.tickets)) || d.got[idx].Swap(true) {
		r.rep.BadReceipts++
		return
	}
	r.received.Add(1)
	r.lat, r.at = append(r.lat, now.Sub(time.Unix(0, d.sentAt[idx].Load()))), append(r.at, now.UnixNano())
	r.rep.count(&rc)
	select {
	case <-d.slots:
	default:
	}
}

// count adds a receipt's status to the report. The caller holds the lock.
func (rep *Report) count(rc *protocol.Receipt) {
	switch rc.Status {
	case protocol.StatusAccepted:
		rep.Accepted++
		rep.Charged[rc.Currency] += rc.Charged
	case protocol.StatusDuplicate:
		rep.Duplicates++
	case protocol.StatusInsufficientFunds:
		rep.InsufficientFunds++
	case protocol.StatusRetryLater:
		rep.RetryLater++
	case protocol.StatusHeld:
		if rep.Held == nil {
			rep.Held = map[string]uint64{}
		}
		rep.Held[rc.Reason.String()]++
	default:
		rep.Rejected[rc.Reason.String()]++
	}
}

// connect connects every device over its transport (a CoAP/DTLS session,
// or an MQTT client subscribed to its receipts); the function it returns
// closes them.
func (r *run) connect(ctx context.Context) (func(), error) {
	cfg, devs := r.cfg, r.devs
	if cfg.Transport == "coaps" {
		if err := connectCoAP(ctx, cfg, devs, &r.rep); err != nil {
			return nil, err
		}
		return func() {
			for _, d := range devs {
				if d.coap != nil {
					d.coap.Close()
				}
			}
		}, nil
	}
	for _, d := range devs {
		opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(d.entry.ID).
			SetUsername(d.entry.ID).SetPassword(d.password).SetCleanSession(true).SetAutoReconnect(false).
			SetOrderMatters(false).SetWriteTimeout(10 * time.Second)
		d.client = paho.NewClient(opts)
		if t := d.client.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			closeAll(devs)
			return nil, fmt.Errorf("sim: device %s cannot connect to %s: %v", d.entry.ID, cfg.Broker, t.Error())
		}
		topic := protocol.Topics{Prefix: cfg.Prefix}.Receipt(d.entry.ID)
		if t := d.client.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { r.onReceipt(d, m.Payload()) }); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			closeAll(devs)
			return nil, fmt.Errorf("sim: device %s cannot subscribe to %s: %v", d.entry.ID, topic, t.Error())
		}
	}
	return func() { closeAll(devs) }, nil
}

// signAll signs everything before the clock starts, once connected,
// dated from the start: after the signing, whose length is foretold from
// the first device's (a long run's tickets take many seconds to sign).
func (r *run) signAll() error {
	devs := r.devs
	r.interval = time.Duration(float64(time.Second) * float64(len(devs)) / r.cfg.Rate)
	t0 := time.Now()
	if err := devs[0].sign(r.epoch, t0, r.interval); err != nil {
		return err
	}
	r.start = time.Now().Add(time.Since(t0)*time.Duration(len(devs))*5/4 + 100*time.Millisecond)
	for i, d := range devs {
		if err := d.sign(r.epoch, r.start.Add(firstAt(r.interval, i, len(devs))), r.interval); err != nil {
			return err
		}
	}
	if wait := time.Until(r.start); wait > 0 {
		time.Sleep(wait)
	} else {
		r.start = time.Now() // the signing took longer than foretold: the tickets are a little late
	}
	return nil
}

// sendAll sends every device's tickets, each device paced to its share
// of the rate, until sendCtx ends; the channel closes when all are sent.
func (r *run) sendAll(ctx, sendCtx context.Context) <-chan struct{} {
	var wg sync.WaitGroup
	for i, d := range r.devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.send(ctx, sendCtx, i, d)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

// send sends device d's tickets, the i-th device's share of the rate.
func (r *run) send(ctx, sendCtx context.Context, i int, d *simDevice) {
	next := r.start.Add(firstAt(r.interval, i, len(r.devs)))
	topic := protocol.Topics{Prefix: r.cfg.Prefix}.Ticket(d.entry.ID)
	for k := range d.tickets {
		if wait := time.Until(next); wait > 0 {
			select {
			case <-time.After(wait):
			case <-sendCtx.Done():
				return
			}
		}
		select {
		case d.slots <- struct{}{}:
		case <-sendCtx.Done():
			return
		}
		d.sentAt[k].Store(time.Now().UnixNano())
		r.sent.Add(1)
		next = next.Add(r.interval)
		if d.coap != nil {
			// One request at a time: a device's tickets arrive in order.
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a request sent is waited for, even past the send window
			resp, err := d.coap.Post(pctx, "/"+protocol.CoAPTicketPath, coapdev.ContentFormat(d.tickets[k]), bytes.NewReader(d.tickets[k]))
			cancel()
			if err == nil && resp.Body() != nil {
				if b, err := io.ReadAll(resp.Body()); err == nil {
					r.onReceipt(d, b)
				}
			}
			continue
		}
		d.client.Publish(topic, 1, false, d.tickets[k])
	}
}

// wait reports progress once a second until every ticket sent has its
// receipt, or the drain time after the last send has passed, or ctx ends.
func (r *run) wait(ctx context.Context, sendingDone <-chan struct{}) {
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	var drainTimer <-chan time.Time
	for {
		select {
		case <-progress.C:
			if r.cfg.Progress != nil {
				fmt.Fprintf(r.cfg.Progress, "sim: %4.0fs sent %d receipts %d\n", time.Since(r.start).Seconds(), r.sent.Load(), r.received.Load())
			}
		case <-sendingDone:
			sendingDone = nil
			drainTimer = time.After(r.cfg.Drain)
			if r.received.Load() == r.sent.Load() {
				return
			}
		case <-drainTimer:
			return
		case <-ctx.Done():
			return
		}
		if sendingDone == nil && r.received.Load() >= r.sent.Load() {
			return
		}
	}
}

// report is the run's report after elapsed: counts, throughput, the
// latency's quantiles and slices.
func (r *run) report(elapsed time.Duration) *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.rep
	rep.Sent = r.sent.Load()
	rep.Missing = rep.Sent - min(rep.Sent, r.received.Load())
	rep.Elapsed = elapsed
	rep.Throughput = float64(r.received.Load()) / elapsed.Seconds()
	rep.Slices = slices(r.lat, r.at, r.start, elapsed, r.cfg.Slice)
	lat := r.lat
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if n := len(lat); n > 0 {
		rep.P50, rep.P99, rep.Max = lat[n/2], lat[min(n-1, n*99/100)], lat[n-1]
	}
	return &rep
}

// firstAt is when device i of n sends its first ticket, after the start:
// the devices' first tickets are spread over one interval.
func firstAt(interval time.Duration, i, n int) time.Duration {
	return time.Duration(int64(interval) * int64(i) / int64(n))
}

// onBare takes an answer of a bare server (Config.Bare): the oldest
// ticket of d still unanswered is answered.
func onBare(d *simDevice, now time.Time, mu *sync.Mutex, received *atomic.Uint64, lat *[]time.Duration, at *[]int64) {
	mu.Lock()
	defer mu.Unlock()
	if k := d.answered; k < len(d.got) {
		if sent := d.sentAt[k].Load(); sent != 0 {
			d.got[k].Store(true)
			d.answered++
			received.Add(1)
			*lat, *at = append(*lat, now.Sub(time.Unix(0, sent))), append(*at, now.UnixNano())
		}
	}
	select {
	case <-d.slots:
	default:
	}
}

// slices cuts the run into slices of every by when each receipt came and
// returns each slice's latency.
func slices(lat []time.Duration, at []int64, start time.Time, elapsed, every time.Duration) []Slice {
	n := int(elapsed / every)
	if elapsed%every >= every/2 {
		n++
	}
	if n < 2 {
		return nil
	}
	by := make([][]time.Duration, n)
	for i, l := range lat {
		k := int(time.Duration(at[i]-start.UnixNano()) / every)
		if k >= 0 && k < n {
			by[k] = append(by[k], l)
		}
	}
	out := make([]Slice, n)
	for k, ls := range by {
		sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
		if m := len(ls); m > 0 {
			out[k] = Slice{Receipts: uint64(m), P50: ls[m/2], P99: ls[min(m-1, m*99/100)]}
		}
	}
	return out
}

func closeAll(devs []*simDevice) {
	for _, d := range devs {
		if d != nil && d.client != nil && d.client.IsConnected() {
			d.client.Disconnect(100)
		}
	}
}

// prepare derives the device's keys and signs n tickets, one every
// "every": a new register
// epoch for the run, registers that grow by 1..100 per ticket on every
// meter the device has a tariff for.
func prepare(e registry.Entry, s registry.Secrets, n int, seqBase uint64, inflight int) (*simDevice, error) {
	if e.KeyType == "ed25519" && s.Private == nil {
		return nil, fmt.Errorf("sim: device %s signs with Ed25519, and its private key was not given", e.ID)
	}
	signer, err := s.Signer()
	if err != nil {
		return nil, err
	}
	rv, err := s.ReceiptVerifier()
	if err != nil {
		return nil, err
	}
	meters := make([]string, 0, len(e.Tariffs))
	for m := range e.Tariffs {
		meters = append(meters, m)
	}
	sort.Strings(meters)
	if len(meters) > protocol.MaxReadings {
		meters = meters[:protocol.MaxReadings]
	}
	return &simDevice{entry: e, password: s.MQTTPassword(), psk: s.DTLSPSK(), receipts: rv, base: seqBase, tickets: make([][]byte, n),
		sentAt: make([]atomic.Int64, n), got: make([]atomic.Bool, n), slots: make(chan struct{}, inflight),
		signer: signer, meters: meters}, nil
}

// sign makes the device's tickets: a new register epoch for the run,
// registers that grow by 1..100 per ticket on every meter the device has
// a tariff for, and the device's clock reading the time each ticket is
// planned to go out, one every "every" from start. It runs once the
// devices are connected, so that the times are those of the run (a large
// fleet takes a while to connect) and its windows are not corrections.
func (d *simDevice) sign(epoch uint64, start time.Time, every time.Duration) error {
	if d.payword {
		return d.signPayword(epoch, start)
	}
	regs := make([]uint64, len(d.meters))
	r := rand.New(rand.NewPCG(d.base, uint64(len(d.entry.ID))))
	var enc protocol.Encoder
	at := uint64(start.UnixMilli())
	for k := range d.tickets {
		t := protocol.Ticket{Device: d.entry.ID, Seq: d.base + uint64(k), Time: at + uint64(int64(k)*every.Milliseconds()), Epoch: epoch}
		for i, m := range d.meters {
			regs[i] += 1 + r.Uint64N(100)
			t.Readings = append(t.Readings, protocol.Reading{Meter: m, Register: regs[i]})
		}
		var err error
		if d.tickets[k], err = enc.AppendTicket(nil, &t, d.signer); err != nil {
			return err
		}
	}
	return nil
}

// signPayword makes a payword device's messages: tickets[0] commits to a
// chain as long as the run (10 units of the device's first meter a step,
// in a new epoch, so it starts from 0), and tickets[k] is the chain's
// payword k. A payword ticket's seq is the chain number (base / 2^32) ×
// 2^32 + k, so tickets[k] has seq base + k like any other.
func (d *simDevice) signPayword(epoch uint64, start time.Time) error {
	n := uint32(len(d.tickets) - 1)
	if n == 0 {
		n = 1
	}
	var id protocol.ChainID
	binary.BigEndian.PutUint64(id[:], d.base^uint64(len(d.entry.ID))<<56^fnv64(d.entry.ID))
	terms := protocol.Commitment{Device: d.entry.ID, Chain: id, Number: uint32(d.base >> 32), Meter: d.meters[0], Units: 10,
		Expiry: uint64(start.Add(24 * time.Hour).UnixMilli()), Epoch: epoch}
	var seed protocol.Payword
	binary.BigEndian.PutUint64(seed[:], fnv64(d.entry.ID)^d.base)
	var ch devicefw.Chain
	if err := ch.Init(terms, 0, seed, n, make([]devicefw.ChainFrame, devicefw.ChainFrames(n))); err != nil {
		return err
	}
	var enc protocol.Encoder
	var err error
	if d.tickets[0], err = enc.AppendCommitment(nil, ch.Commitment(), d.signer); err != nil {
		return err
	}
	for k := 1; k < len(d.tickets); k++ {
		w, err := ch.Seek(uint32(k))
		if err != nil {
			return err
		}
		if d.tickets[k], err = protocol.AppendPaywordTicket(nil, &protocol.PaywordTicket{Device: d.entry.ID, Chain: id, Index: uint32(k), Word: w}); err != nil {
			return err
		}
	}
	return nil
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return h
}

// connectCoAP opens every device's DTLS session and completes its
// handshake before the clock starts, retrying with backoff when the
// gateway's per-source handshake limit refuses one.
func connectCoAP(ctx context.Context, cfg Config, devs []*simDevice, rep *Report) error {
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(devs))
	sem := make(chan struct{}, 32)
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var err error
			for attempt := 0; attempt < 8; attempt++ {
				d.coap, err = coapdtls.Dial(cfg.CoAPAddr, coapdtls.NewDTLSClientOptions(
					piondtls.WithPSK(func([]byte) ([]byte, error) { return d.psk, nil }),
					piondtls.WithPSKIdentityHint([]byte(d.entry.ID)),
					piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
					piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator())))
				if err == nil {
					if dc, ok := d.coap.NetConn().(*piondtls.Conn); ok {
						hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
						err = dc.HandshakeContext(hctx)
						cancel()
					}
				}
				if err == nil {
					return
				}
				if d.coap != nil {
					d.coap.Close()
					d.coap = nil
				}
				time.Sleep(time.Duration(100<<attempt) * time.Millisecond)
			}
			errs <- fmt.Errorf("sim: device %s: DTLS handshake with %s: %w", d.entry.ID, cfg.CoAPAddr, err)
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	rep.HandshakesPerSecond = float64(len(devs)) / time.Since(start).Seconds()
	return nil
}
