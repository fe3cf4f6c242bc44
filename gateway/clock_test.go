package gateway_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/coapdev"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

// A device without a real-time clock boots with its uptime for a clock:
// its first ticket is refused clock_skew and charged nothing, but the
// receipt carries the gateway's time inside its MAC; the device takes it,
// dates its next tickets right, and is charged exactly what a device with
// a clock is for the same usage.
func TestDeviceWithoutAClockLearnsTheTime(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}, {"plug-2", "hmac", "fleet"}})
	boot := time.Now()
	c := meterClient(t, tg, "plug-1", func() uint64 { return uint64(time.Since(boot).Milliseconds()) + 1000 })
	d := connectPaywordDevice(t, tg, "plug-1", c)
	report := func(reg uint64) protocol.Receipt {
		t.Helper()
		at, _ := c.Now()
		if _, err := d.Report(at, []devicefw.Reading{{Meter: 0, Register: reg}}); err != nil {
			t.Fatal(err)
		}
		return d.next(t)
	}
	if _, synced := c.Now(); synced {
		t.Fatal("the device knows the time before any receipt")
	}
	r := report(1_000)
	if r.Status != protocol.StatusRejected || r.Reason != protocol.ReasonClockSkew || r.Charged != 0 {
		t.Fatalf("a ticket dated by uptime: %+v; want rejected, clock_skew, nothing charged", r)
	}
	if off := time.Since(time.UnixMilli(int64(r.Time))); r.Time == 0 || off < -5*time.Second || off > 5*time.Second {
		t.Fatalf("the receipt's time %d is not the gateway's clock", r.Time)
	}
	at, synced := c.Now()
	if off := time.Since(time.UnixMilli(int64(at))); !synced || off < -5*time.Second || off > 5*time.Second {
		t.Fatalf("after the receipt the device's time is %d (synced %v)", at, synced)
	}
	if r := report(2_000); r.Status != protocol.StatusAccepted || r.Charged != 0 {
		t.Fatalf("the first ticket dated right: %+v; want accepted as the baseline", r)
	}
	learned := report(3_000)
	clocked := connectDevice(t, tg, "plug-2")
	var withClock protocol.Receipt
	for _, reg := range []uint64{2_000, 3_000} { // one at a time: receipts may pass each other
		clocked.Report(now(), []devicefw.Reading{{Meter: 0, Register: reg}})
		withClock = clocked.next(t)
	}
	if learned.Status != protocol.StatusAccepted || learned.Charged == 0 || learned.Charged != withClock.Charged {
		t.Fatalf("1 kWh from the device that learned the time: %+v; from a device with a clock: %+v", learned, withClock)
	}
}

// A device registered clock: gateway sends tickets without a usable time
// (its uptime, here 5 ms): over MQTT and over CoAP they are accepted and
// dated on arrival.
func TestGatewayDatedDevice(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-m", "hmac", "fleet"}, {"plug-c", "hmac", "fleet"}})
	rf, err := registry.ReadFile(tg.cfg.Devices)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rf.Devices {
		rf.Devices[i].Clock = registry.ClockGateway
	}
	if err := registry.WriteFile(tg.cfg.Devices, rf); err != nil {
		t.Fatal(err)
	}
	if err := tg.Reload(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d := connectDevice(t, tg, "plug-m")
	for _, reg := range []uint64{1_000, 2_000} {
		d.Report(5, []devicefw.Reading{{Meter: 0, Register: reg}})
		if r := d.next(t); r.Status != protocol.StatusAccepted {
			t.Fatalf("MQTT, a ticket dated 5 ms after 1970: %+v; want accepted", r)
		}
	}
	c := meterClient(t, tg, "plug-c", nil)
	cd, err := coapdev.Dial(coapdev.Config{Addr: tg.CoAPAddr(), Device: "plug-c", PSK: tg.secrets["plug-c"].DTLSPSK(), Client: c})
	if err != nil {
		t.Fatal(err)
	}
	defer cd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, reg := range []uint64{1_000, 2_000} {
		if r, err := cd.Report(ctx, 5, []devicefw.Reading{{Meter: 0, Register: reg}}); err != nil || r.Status != protocol.StatusAccepted {
			t.Fatalf("CoAP, a ticket dated 5 ms after 1970: %+v, %v; want accepted", r, err)
		}
	}
	rep, err := tg.Books().Inspect(nil)
	if err != nil || !rep.Reconcile.Balanced || rep.Reconcile.ReceiptsCharged != 2*300_000_000 {
		t.Fatalf("books: %+v, %v; want two kWh charged", rep.Reconcile, err)
	}
	for _, w := range rep.OpenWindows {
		if time.UnixMilli(w.End).Before(start) {
			t.Errorf("window %+v: the usage was not dated on arrival", w)
		}
	}
	if len(rep.OpenWindows) == 0 {
		t.Error("no open window: where did the usage go?")
	}
}

// Windows follow the wall clock, not the process. With the gateway's
// clock three days behind, a device's ticket (dated by a right clock) is
// refused clock_skew and nothing is charged; an hour behind, it is taken,
// and its window, which ended 20 minutes ago by the device's time, stays
// open by the gateway's. When the clock jumps forward (NTP syncs a box
// with no RTC) the next housekeeping tick seals it; when it jumps back,
// nothing sealed reopens: a ticket for that window is late, folded into a
// correction.
func TestWindowsFollowTheClock(t *testing.T) {
	var offset atomic.Int64
	offset.Store(int64(-72 * time.Hour))
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.Clock, c.Providers[0].Window = clock, 10*time.Minute
	})
	d := connectDevice(t, tg, "plug-1")
	send := func(reg uint64, at time.Time) protocol.Receipt {
		t.Helper()
		d.Report(uint64(at.UnixMilli()), []devicefw.Reading{{Meter: 0, Register: reg}})
		return d.next(t)
	}
	used := time.Now().Add(-30 * time.Minute) // in a 10-minute window that ended 20 to 30 minutes ago
	if r := send(1_000, time.Now()); r.Status != protocol.StatusRejected || r.Reason != protocol.ReasonClockSkew {
		t.Fatalf("gateway clock 3 days behind: %+v; want clock_skew", r)
	}
	offset.Store(int64(-time.Hour))
	for i, reg := range []uint64{2_000, 3_000} {
		if r := send(reg, used.Add(time.Duration(i)*time.Second)); r.Status != protocol.StatusAccepted {
			t.Fatalf("gateway clock an hour behind: %+v; want accepted", r)
		}
	}
	inspect := func() *ledger.Report {
		t.Helper()
		rep, err := tg.Books().Inspect(nil)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	time.Sleep(1500 * time.Millisecond) // a housekeeping tick or more
	if rep := inspect(); len(rep.OpenWindows) != 1 || len(rep.Sealed) != 0 {
		t.Fatalf("an hour behind, the window that ended by the devices' time: %d open, %d sealed; want it open", len(rep.OpenWindows), len(rep.Sealed))
	}
	offset.Store(0) // the clock jumps forward
	deadline := time.Now().Add(5 * time.Second)
	for len(inspect().Sealed) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after the jump forward, no window sealed: %+v", inspect().OpenWindows)
		}
		time.Sleep(100 * time.Millisecond)
	}
	offset.Store(int64(-2 * time.Hour)) // and back
	if r := send(4_000, used.Add(2*time.Second)); r.Status != protocol.StatusAccepted {
		t.Fatalf("after the jump back: %+v", r)
	}
	time.Sleep(1500 * time.Millisecond)
	rep := inspect()
	if len(rep.Sealed) != 1 || len(rep.OpenWindows) != 0 || rep.Reconcile.WindowsLate == 0 || !rep.Reconcile.Balanced {
		t.Fatalf("after the jump back: %d sealed, %d open, %d late; want the window sealed once, the ticket late", len(rep.Sealed),
			len(rep.OpenWindows), rep.Reconcile.WindowsLate)
	}
}

// A gateway restarted with its clock three days behind (a box without a
// real-time clock, before NTP) says at once, at ERROR, that its clock is
// behind its own books, and shows it in farthing_clock_* and /readyz;
// when its devices are refused clock_skew all the same way it says its
// clock is the likely fault, once; when the clock jumps right, it says so,
// and the devices' next tickets charge everything, the refused usage too.
func TestGatewayKnowsItsClockIsWrong(t *testing.T) {
	ids := []string{"plug-1", "plug-2", "plug-3"}
	tg := startGateway(t, []devSpec{{ids[0], "hmac", "fleet"}, {ids[1], "hmac", "fleet"}, {ids[2], "hmac", "fleet"}})
	reg := map[string]uint64{}
	clients := map[string]*devicefw.Client{} // each keeps its seqs across the gateway's restart
	for _, id := range ids {
		clients[id] = meterClient(t, tg, id, nil)
	}
	sendAll := func(tg *testGateway, want protocol.Status) (charged uint64) {
		t.Helper()
		for _, id := range ids {
			d := connectPaywordDevice(t, tg, id, clients[id])
			reg[id] += 1_000
			d.Report(now(), []devicefw.Reading{{Meter: 0, Register: reg[id]}})
			r := d.next(t)
			if r.Status != want {
				t.Fatalf("%s: %+v; want %v", id, r, want)
			}
			charged += r.Charged
			d.Close()
		}
		return charged
	}
	sendAll(tg, protocol.StatusAccepted) // baselines
	tg.stop()

	var offset atomic.Int64
	offset.Store(int64(-72 * time.Hour))
	tg.cfg.Clock = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	logs := &syncBuffer{}
	g, stop := runGatewayLog(t, tg.cfg, logs)
	defer stop()
	tg2 := &testGateway{Gateway: g, cfg: tg.cfg, secrets: tg.secrets, broker: tg.broker, stop: stop, logs: logs}
	base := "http://" + g.HTTPAddr()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s; log:\n%s", what, logs.String())
			}
		}
	}
	waitFor("no ERROR about a clock behind the books", func() bool {
		return strings.Contains(logs.String(), "before the newest time in the gateway's own books")
	})
	_, m := httpGet(t, base+"/metrics")
	if metricValue(m, "farthing_clock_suspect") != 1 || metricValue(m, "farthing_clock_behind_books_seconds") < 71*3600 {
		t.Errorf("metrics: suspect %v, behind books %v s", metricValue(m, "farthing_clock_suspect"), metricValue(m, "farthing_clock_behind_books_seconds"))
	}
	if _, body := httpGet(t, base+"/readyz"); !strings.Contains(body, "clock: the clock reads") {
		t.Errorf("/readyz: %q", body)
	}
	if c := sendAll(tg2, protocol.StatusRejected); c != 0 {
		t.Fatalf("charged %d with the clock 3 days behind", c)
	}
	waitFor("no WARN about devices all off one way", func() bool {
		return strings.Contains(logs.String(), "3 of 3 devices refused clock_skew") && strings.Contains(logs.String(), "likely behind theirs")
	})
	offset.Store(0) // NTP syncs
	waitFor("no line saying the clock is right again", func() bool { return strings.Count(logs.String(), "the gateway's clock is right again") >= 1 })
	if c := sendAll(tg2, protocol.StatusAccepted); c != 3*2*300_000_000 {
		t.Fatalf("after the jump the devices were charged %d; want 2 kWh each, the refused usage too", c)
	}
	if n := strings.Count(logs.String(), "before the newest time in the gateway's own books"); n != 1 {
		t.Errorf("the clock behind the books was said %d times; want once", n)
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "clock") {
			t.Log(l) // what the operator sees
		}
	}
}

// An HTTP upstream's Date header shows a gateway clock an hour ahead:
// said once at WARN, in farthing_clock_upstream_offset_seconds and in
// /readyz's detail.
func TestUpstreamDateShowsAWrongClock(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer srv.Close()
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.Clock = func() time.Time { return time.Now().Add(time.Hour) }
		c.Providers[0].Window = time.Second
		c.Upstreams = []gateway.UpstreamConfig{{Name: "provider", Type: "http", URL: srv.URL}}
		c.Forward = gateway.ForwardSettings{BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
	})
	d := connectDevice(t, tg, "plug-1")
	for _, reg := range []uint64{1_000, 2_000} {
		d.Report(uint64(time.Now().Add(time.Hour).UnixMilli()), []devicefw.Reading{{Meter: 0, Register: reg}})
		d.next(t)
	}
	base := "http://" + tg.HTTPAddr()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(tg.logs.String(), "an HTTP upstream's clock (its Date header) is -1h0m"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no line about the upstream's Date; log:\n%s", tg.logs.String())
		}
	}
	_, m := httpGet(t, base+"/metrics")
	if v := metricValue(m, "farthing_clock_upstream_offset_seconds"); v > -3590 || v < -3610 || metricValue(m, "farthing_clock_suspect") != 1 {
		t.Errorf("upstream offset %v s, suspect %v; want about -3600 and 1", v, metricValue(m, "farthing_clock_suspect"))
	}
	if _, body := httpGet(t, base+"/readyz"); !strings.Contains(body, "Date header") {
		t.Errorf("/readyz: %q", body)
	}
}

// A device without a clock asks for the time before its first ticket,
// over MQTT and over CoAP: the answer (seq 0, the gateway's time, the
// request's nonce) sets its clock, and its first ticket is accepted. An
// answer replayed to a later request is not taken.
func TestDeviceAsksForTheTime(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-m", "hmac", "fleet"}, {"plug-c", "hmac", "fleet"}})
	boot := time.Now()
	client := func(id string) *devicefw.Client {
		return meterClient(t, tg, id, func() uint64 { return uint64(time.Since(boot).Milliseconds()) + 1 })
	}
	cm := client("plug-m")
	d := connectPaywordDevice(t, tg, "plug-m", cm)
	if err := d.RequestTime(); err != nil {
		t.Fatal(err)
	}
	answer := d.next(t)
	at, synced := cm.Now()
	if answer.Seq != 0 || answer.Status != protocol.StatusAccepted || !answer.IsTimeAnswer() || !synced ||
		time.Since(time.UnixMilli(int64(at))).Abs() > 5*time.Second {
		t.Fatalf("MQTT: the answer %+v, the device's time %d (synced %v)", answer, at, synced)
	}
	d.Report(at, []devicefw.Reading{{Meter: 0, Register: 1_000}})
	if r := d.next(t); r.Status != protocol.StatusAccepted {
		t.Fatalf("MQTT: the first ticket after the time: %+v", r)
	}

	cc := client("plug-c")
	s := tg.secrets["plug-c"]
	cd, err := coapdev.Dial(coapdev.Config{Addr: tg.CoAPAddr(), Device: "plug-c", PSK: s.DTLSPSK(), Client: cc})
	if err != nil {
		t.Fatal(err)
	}
	defer cd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := cd.RequestTime(ctx)
	if _, synced := cc.Now(); err != nil || !first.IsTimeAnswer() || !synced {
		t.Fatalf("CoAP: the answer %+v, %v (synced %v)", first, err, synced)
	}
	at, _ = cc.Now()
	if r, err := cd.Report(ctx, at, []devicefw.Reading{{Meter: 0, Register: 1_000}}); err != nil || r.Status != protocol.StatusAccepted {
		t.Fatalf("CoAP: the first ticket after the time: %+v, %v", r, err)
	}
	// The first answer, replayed after a second request, is not the answer
	// to that one: its time is not taken.
	if _, err := cc.TimeRequest(nil); err != nil {
		t.Fatal(err)
	}
	var enc protocol.Encoder
	rv, _ := s.ReceiptVerifier()
	old, _ := enc.AppendReceipt(nil, &protocol.Receipt{Device: "plug-c", Status: protocol.StatusAccepted, Time: 1_000, Nonce: first.Nonce}, rv)
	if _, err := cc.HandleReceipt(old); err != devicefw.ErrNotPending {
		t.Fatalf("a replayed time answer: %v; want ErrNotPending", err)
	}
	if at, _ := cc.Now(); time.Since(time.UnixMilli(int64(at))).Abs() > 5*time.Second {
		t.Fatalf("a replayed answer set the device's clock to %d", at)
	}
}

// meterClient is a one-meter devicefw client of device id of tg, with
// the device's secrets; uptime, if not nil, is its clock (a device
// without a real-time clock).
func meterClient(t *testing.T, tg *testGateway, id string, uptime func() uint64) *devicefw.Client {
	t.Helper()
	s := tg.secrets[id]
	signer, _ := s.Signer()
	rv, _ := s.ReceiptVerifier()
	c, err := devicefw.New(devicefw.Config{Device: id, Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 4*protocol.MaxTicketSize), Uptime: uptime})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
