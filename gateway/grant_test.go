package gateway_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/coapdev"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/protocol"
)

// whPrice is the test tariff's energy price: 0.30 EUR per kWh.
const whPrice = 300_000

// grantDevice is a device with a grant, over MQTT or CoAP.
type grantDevice interface {
	grant(t *testing.T, register, units uint64) protocol.Receipt
	report(t *testing.T, register uint64) protocol.Receipt
	release(t *testing.T, register uint64) protocol.Receipt
	client() *devicefw.Client
}

type mqttGrantDevice struct {
	d *device
	c *devicefw.Client
}

func (m *mqttGrantDevice) client() *devicefw.Client { return m.c }
func (m *mqttGrantDevice) grant(t *testing.T, register, units uint64) protocol.Receipt {
	t.Helper()
	if _, err := m.d.RequestGrant(0, register, units, 0); err != nil {
		t.Fatal(err)
	}
	return m.d.next(t)
}
func (m *mqttGrantDevice) report(t *testing.T, register uint64) protocol.Receipt {
	t.Helper()
	if _, err := m.d.Report(uint64(time.Now().UnixMilli()), []devicefw.Reading{{Meter: 0, Register: register}}); err != nil {
		t.Fatal(err)
	}
	return m.d.next(t)
}
func (m *mqttGrantDevice) release(t *testing.T, register uint64) protocol.Receipt {
	t.Helper()
	if _, err := m.d.Release(register); err != nil {
		t.Fatal(err)
	}
	return m.d.next(t)
}

type coapGrantDevice struct {
	d   *coapdev.Device
	c   *devicefw.Client
	ctx context.Context
}

func dialGrantCoAP(t *testing.T, tg *testGateway, id string, c *devicefw.Client) *coapGrantDevice {
	t.Helper()
	d, err := coapdev.Dial(coapdev.Config{Addr: tg.CoAPAddr(), Device: id, PSK: tg.secrets[id].DTLSPSK(), Client: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return &coapGrantDevice{d: d, c: c, ctx: ctx}
}

func (g *coapGrantDevice) client() *devicefw.Client { return g.c }
func (g *coapGrantDevice) grant(t *testing.T, register, units uint64) protocol.Receipt {
	t.Helper()
	r, err := g.d.RequestGrant(g.ctx, 0, register, units, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
func (g *coapGrantDevice) report(t *testing.T, register uint64) protocol.Receipt {
	t.Helper()
	r, err := g.d.Report(g.ctx, uint64(time.Now().UnixMilli()), []devicefw.Reading{{Meter: 0, Register: register}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
func (g *coapGrantDevice) release(t *testing.T, register uint64) protocol.Receipt {
	t.Helper()
	r, err := g.d.Release(g.ctx, register)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// reconciled returns the books' reconciliation, failing the test when
// it does not balance.
func reconciled(t *testing.T, tg *testGateway) ledger.ReconcileReport {
	t.Helper()
	rep, err := tg.Books().Inspect(nil)
	if err != nil || !rep.Reconcile.Balanced {
		t.Fatalf("books: %+v, %v", rep.Reconcile, err)
	}
	return rep.Reconcile
}

// TestChargerSessionUnderAGrant runs a charger's session over MQTT and
// over CoAP/DTLS: grant, use, a re-grant at the threshold, release. The
// account is charged exactly the usage, from the reservation; what was
// left is released; the balance never moved for a reservation; the books
// reconcile with reservations to the nano.
func TestChargerSessionUnderAGrant(t *testing.T) {
	tg := startGateway(t, []devSpec{{"evse-m", "hmac", "prepaid-1"}, {"evse-c", "hmac", "prepaid-1"}})
	mc := meterClient(t, tg, "evse-m", nil)
	devs := map[string]grantDevice{
		"mqtt": &mqttGrantDevice{d: connectPaywordDevice(t, tg, "evse-m", mc), c: mc},
		"coap": dialGrantCoAP(t, tg, "evse-c", meterClient(t, tg, "evse-c", nil)),
	}
	charged := uint64(0)
	for _, name := range []string{"mqtt", "coap"} {
		d := devs[name]
		if r := d.report(t, 1000); r.Status != protocol.StatusAccepted { // the meter's baseline
			t.Fatalf("%s: baseline %+v", name, r)
		}
		before := uint64(tg.Books().Available(&tg.Ingest().Snapshot().Terms, "prepaid-1"))
		g := d.grant(t, 1000, 2000)
		if !g.IsGrant() || g.Grant.Limit != 3000 || g.Grant.Threshold != 2600 || g.Grant.Reserved != 2000*whPrice ||
			uint64(g.Balance) != before-2000*whPrice {
			t.Fatalf("%s: grant %+v; want 2 kWh reserved up to register 3000", name, g)
		}
		c := d.client()
		reg := uint64(1000)
		for c.May(uint64(time.Now().UnixMilli()), reg+500) == devicefw.Serve {
			reg += 500
			if r := d.report(t, reg); r.Status != protocol.StatusAccepted || r.Charged != 500*whPrice {
				t.Fatalf("%s: ticket at %d: %+v", name, reg, r)
			}
		}
		if reg != 2500 || c.May(uint64(time.Now().UnixMilli()), 2600) != devicefw.AskAgain {
			t.Fatalf("%s: served to %d before the threshold; want 2500", name, reg)
		}
		if g2 := d.grant(t, reg, 2000); g2.Grant.ID != g.Grant.ID || g2.Grant.Limit != 5000 || g2.Grant.Reserved != (500+2000)*whPrice {
			t.Fatalf("%s: re-grant at the threshold: %+v", name, g2.Grant)
		}
		for _, step := range []uint64{700, 300} {
			reg += step
			if r := d.report(t, reg); r.Status != protocol.StatusAccepted || r.Charged != step*whPrice {
				t.Fatalf("%s: ticket at %d: %+v", name, reg, r)
			}
		}
		rel := d.release(t, reg)
		if rel.Grant.Closed != protocol.GrantReleased || rel.Grant.Reserved != 0 || uint64(rel.Balance) != before-(reg-1000)*whPrice {
			t.Fatalf("%s: release %+v", name, rel)
		}
		if got, _ := c.Grant(); got.ID != 0 {
			t.Fatalf("%s: the device kept its grant after the release", name)
		}
		charged += (reg - 1000) * whPrice
	}
	r := reconciled(t, tg)
	if r.Reserved != 0 || uint64(r.Grants.Paid) != charged || uint64(r.LedgerCharged) != charged || r.Grants.Open != 0 ||
		r.Grants.Released != r.Grants.Held-r.Grants.Paid {
		t.Fatalf("after both sessions: %+v; want %d charged from reservations, nothing reserved", r, charged)
	}
	code, page := httpGet(t, "http://"+tg.HTTPAddr()+"/console/accounts/prepaid-1")
	if code != 200 || !strings.Contains(page, `<dd id="account-reserved">0.00 EUR</dd>`) || !strings.Contains(page, `id="grants"`) ||
		strings.Count(page, "<td>released</td>") != 2 {
		t.Fatalf("the console's account page: %d\n%s", code, page)
	}
}

// TestOneGrantTwoDevices: an account with funds for one grant, two
// devices asking at once over CoAP/DTLS: one is granted, the other
// refused insufficient funds, before either served.
func TestOneGrantTwoDevices(t *testing.T) {
	tg := startGateway(t, []devSpec{{"evse-1", "hmac", "one-grant"}, {"evse-2", "hmac", "one-grant"}}, func(c *gateway.Config) {
		c.Accounts = append(c.Accounts, gateway.AccountConfig{ID: "one-grant", Kind: "prepaid", Currency: "EUR", Balance: "0.60"})
	})
	var wg sync.WaitGroup
	answers := make([]protocol.Receipt, 2)
	for i, id := range []string{"evse-1", "evse-2"} {
		d := dialGrantCoAP(t, tg, id, meterClient(t, tg, id, nil))
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := d.d.RequestGrant(d.ctx, 0, 0, 2000, 0)
			if err != nil {
				t.Error(err)
			}
			answers[i] = r
		}()
	}
	wg.Wait()
	granted, refused := 0, 0
	for _, a := range answers {
		switch {
		case a.IsGrant() && a.Grant.Reserved == 600_000_000:
			granted++
		case a.Status == protocol.StatusInsufficientFunds && a.HasBalance && a.Balance == 0:
			refused++
		}
	}
	if granted != 1 || refused != 1 {
		t.Fatalf("answers %+v; want one grant of 0.60 EUR and one refusal with nothing available", answers)
	}
	if r := reconciled(t, tg); r.Reserved != 600_000_000 || r.Grants.Open != 1 {
		t.Fatalf("%+v", r)
	}
}

// TestDeviceCutOffServesToItsGrant: a charger granted 1.5 kWh loses the
// gateway; it goes on serving to its grant by itself and stops at the
// final unit; back in reach, its pending ticket is accepted and charged
// exactly the grant, from the reservation.
func TestDeviceCutOffServesToItsGrant(t *testing.T) {
	tg := startGateway(t, []devSpec{{"evse-x", "hmac", "prepaid-1"}})
	c := meterClient(t, tg, "evse-x", nil)
	d := dialGrantCoAP(t, tg, "evse-x", c)
	d.report(t, 100)
	if g := d.grant(t, 100, 1500); g.Grant.Limit != 1600 {
		t.Fatalf("grant %+v", g)
	}
	d.d.Close() // cut off
	reg := uint64(100)
	for c.May(uint64(time.Now().UnixMilli()), reg) != devicefw.Stop { // may serve on from reg
		reg += 100
		if _, _, err := c.Report(uint64(time.Now().UnixMilli()), []devicefw.Reading{{Meter: 0, Register: reg}}); err != nil {
			t.Fatalf("report while cut off at %d: %v", reg, err)
		}
	}
	if reg != 1600 {
		t.Fatalf("stopped at %d; want the final unit at 1600", reg)
	}
	back := dialGrantCoAP(t, tg, "evse-x", c)
	if n := back.d.ResendPending(back.ctx); n == 0 || c.Pending() != 0 {
		t.Fatalf("back in reach: %d answered, %d still pending", n, c.Pending())
	}
	r := reconciled(t, tg)
	if r.Grants.Paid != 1500*whPrice || r.LedgerCharged != 1500*whPrice || r.Reserved != 0 {
		t.Fatalf("after the reconnect: %+v; want exactly the grant charged from it", r)
	}
}

// TestGrantsEndByThemselves: a grant nobody uses ends at its idle
// timeout, one used past its validity ends at its expiry; both give back
// what they reserve, and are counted.
func TestGrantsEndByThemselves(t *testing.T) {
	tg := startGateway(t, []devSpec{{"evse-i", "hmac", "prepaid-1"}, {"evse-e", "hmac", "prepaid-1"}}, func(c *gateway.Config) {
		c.Grants = gateway.GrantsConfig{Validity: 3 * time.Second, Idle: 1500 * time.Millisecond}
	})
	idle := dialGrantCoAP(t, tg, "evse-i", meterClient(t, tg, "evse-i", nil))
	busy := dialGrantCoAP(t, tg, "evse-e", meterClient(t, tg, "evse-e", nil))
	idle.grant(t, 0, 1000)
	g := busy.grant(t, 0, 1000)
	start := time.Now()
	for reg := uint64(10); time.Since(start) < 6*time.Second; reg += 10 {
		busy.report(t, reg)
		time.Sleep(250 * time.Millisecond)
	}
	gs, err := tg.Books().Grants("prepaid-1")
	if err != nil || len(gs) != 2 {
		t.Fatalf("grants %+v, %v", gs, err)
	}
	for _, x := range gs {
		want := map[string]string{"evse-i": "idle", "evse-e": "expired"}[x.Device]
		if x.State.String() != want || x.Reserved != 0 || x.Released+x.Paid != x.Held {
			t.Errorf("grant of %s: %s, reserves %d; want %s, nothing reserved", x.Device, x.State, x.Reserved, want)
		}
	}
	if r := reconciled(t, tg); r.Reserved != 0 || r.Grants.Open != 0 {
		t.Fatalf("%+v", r)
	}
	if c := busy.c; c.May(uint64(time.Now().UnixMilli()), 0) != devicefw.Stop {
		t.Fatalf("the device serves past its grant's validity %v", time.UnixMilli(int64(g.Grant.Expiry)))
	}
}
