package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/coapdev"
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
	s := tg.secrets["plug-1"]
	signer, _ := s.Signer()
	rv, _ := s.ReceiptVerifier()
	c, err := devicefw.New(devicefw.Config{Device: "plug-1", Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 4*protocol.MaxTicketSize),
		Uptime: func() uint64 { return uint64(time.Since(boot).Milliseconds()) + 1000 }})
	if err != nil {
		t.Fatal(err)
	}
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
	for _, reg := range []uint64{2_000, 3_000} {
		clocked.Report(now(), []devicefw.Reading{{Meter: 0, Register: reg}})
	}
	clocked.next(t)
	withClock := clocked.next(t)
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
	s := tg.secrets["plug-c"]
	signer, _ := s.Signer()
	rv, _ := s.ReceiptVerifier()
	c, _ := devicefw.New(devicefw.Config{Device: "plug-c", Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 4*protocol.MaxTicketSize)})
	cd, err := coapdev.Dial(coapdev.Config{Addr: tg.CoAPAddr(), Device: "plug-c", PSK: s.DTLSPSK(), Client: c})
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
