package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/protocol"
)

// plausibleTariff is the test tariff with rules: at most 1000 Wh per
// second of device time, 50 kWh per ticket, the default fault values.
const plausibleTariff = `tariffs:
  - id: energy
    currency: EUR
    period: none
    price: 0.30 EUR
    per: 1000
    plausibility: {max_rate: 3600000/h, max_jump: 50000, max_clock_skew: 15m}
`

// send reports register reg and waits for its receipt.
func (d *testDevice) send(t *testing.T, reg uint64) protocol.Receipt {
	t.Helper()
	d.reg = reg - 1000
	return d.report(t)
}

// sendAt reports register reg at device time at and waits for its receipt.
func (d *testDevice) sendAt(t *testing.T, reg uint64, at time.Time) protocol.Receipt {
	t.Helper()
	d.reg = reg
	if _, err := d.Report(uint64(at.UnixMilli()), []devicefw.Reading{{Meter: 0, Register: reg}}); err != nil {
		t.Fatalf("report: %v", err)
	}
	select {
	case r := <-d.receipts:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no receipt within 10s")
		return protocol.Receipt{}
	}
}

// TestQuarantineOverMQTT runs the plausibility rules against a real
// daemon over MQTT, with a real provider receiving its stream: a meter
// fault (4294967295), a device pumping far above its rate, a jump and a
// register that goes back are each held (charged nothing, receipt
// "held"), the readings between them are charged exactly once, and the
// quarantine is settled through `farthing quarantine`: a release charges
// the held usage, a void drops it, both idempotent and both upstream as
// signed records. The books reconcile to the nano with the held line.
func TestQuarantineOverMQTT(t *testing.T) {
	bin := buildDaemon(t)
	recvAddr := freeAddr(t, "tcp")
	g := newGatewayDir(t, []string{"meter-1", "meter-2"}, "", fmt.Sprintf(`upstreams:
  - {name: provider, type: http, url: "http://%s/aggregates"}
forward: {backoff_min: 20ms, backoff_max: 200ms}
`, recvAddr))
	if err := os.WriteFile(filepath.Join(g.data, "tariffs.yaml"), []byte(plausibleTariff), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, _ := makeGatewayKey(t, g.data)
	recv := startReceiverAt(t, recvAddr, pub)
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dev, err := dialDevice(ctx, g, "meter-1")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()

	want := func(reg uint64, status protocol.Status, reason protocol.Reason, charged uint64) {
		t.Helper()
		r := dev.send(t, reg)
		if r.Status != status || r.Reason != reason || r.Charged != charged {
			t.Fatalf("register %d: %+v; want %v %v, charged %d", reg, r, status, reason, charged)
		}
	}
	const kWh = 300_000_000                    // 0.30 EUR
	want(1_000, protocol.StatusAccepted, 0, 0) // baseline
	want(2_000, protocol.StatusAccepted, 0, kWh)
	want(4294967295, protocol.StatusHeld, protocol.ReasonRegisterFault, 0)
	want(3_000, protocol.StatusAccepted, 0, kWh) // from 2000: the fault was not a reading
	want(23_000, protocol.StatusHeld, protocol.ReasonRateTooHigh, 0)
	want(24_000, protocol.StatusAccepted, 0, kWh) // from 23000: held usage is not charged twice
	want(124_000, protocol.StatusHeld, protocol.ReasonRegisterJump, 0)
	want(500, protocol.StatusHeld, protocol.ReasonRegisterBackwards, 0)
	want(1_500, protocol.StatusAccepted, 0, kWh)
	if r := dev.sendAt(t, 2_500, time.Now().Add(-time.Hour)); r.Status != protocol.StatusHeld || r.Reason != protocol.ReasonClockSkew {
		t.Fatalf("a device clock an hour off: %+v; want held, clock_skew", r)
	}

	out, err := farthingCLI(t, "quarantine", "list", "--data", g.data, "--format", "json")
	var held []ledger.Held
	if err != nil || json.Unmarshal([]byte(out), &held) != nil || len(held) != 5 {
		t.Fatalf("quarantine list: %v\n%s", err, out)
	}
	seqOf := map[string]uint64{}
	for _, h := range held {
		seqOf[h.Rule] = h.Seq
		if h.State != protocol.HoldHeld || h.Device != "meter-1" {
			t.Errorf("held %+v", h)
		}
	}
	if q := held[1].Usage[0].Quantity; held[1].Rule != "rate_too_high" || q != 20_000 {
		t.Errorf("the pumped ticket holds %s %d units; want rate_too_high 20000", held[1].Rule, q)
	}
	ticket := func(rule string) string { return fmt.Sprintf("meter-1/%d", seqOf[rule]) }
	if !strings.Contains(g.logText(), "ticket held") {
		t.Error("no log line for a held ticket")
	}

	// Release the pumped ticket: 20 kWh at 0.30 = 6.00 EUR, once.
	out, err = farthingCLI(t, "quarantine", "release", ticket("rate_too_high"), "--note", "site confirmed a fast charger", "--data", g.data)
	if err != nil || !strings.Contains(out, "released, charged 6000000000 nanos") {
		t.Fatalf("release: %v\n%s", err, out)
	}
	out, err = farthingCLI(t, "quarantine", "release", ticket("rate_too_high"), "--data", g.data)
	if err != nil || !strings.Contains(out, "already released") {
		t.Fatalf("release again: %v\n%s", err, out)
	}
	if out, err = farthingCLI(t, "quarantine", "void", ticket("rate_too_high"), "--note", "x", "--data", g.data); err == nil {
		t.Fatalf("void of a released hold succeeded: %s", out)
	}
	if out, err = farthingCLI(t, "quarantine", "void", ticket("register_jump"), "--data", g.data); err == nil {
		t.Fatalf("void without a note succeeded: %s", out)
	}
	for _, rule := range []string{"register_jump", "register_fault"} {
		out, err = farthingCLI(t, "quarantine", "void", ticket(rule), "--note", "meter error", "--data", g.data)
		if err != nil || !strings.Contains(out, "voided, charged 0 nanos") {
			t.Fatalf("void %s: %v\n%s", rule, err, out)
		}
	}

	// The books: four readings and the release charged, nothing else; the
	// backwards ticket still held.
	charged := drained(t, g)
	if charged != 4*kWh+6_000_000_000 {
		t.Errorf("ledger charged %d; want %d", charged, 4*kWh+6_000_000_000)
	}
	rep := inspect(t, g.data)
	if h := rep.Reconcile.Held; h.Open != 2 || h.Released != 1 || h.Voided != 2 || h.Charged != 6_000_000_000 {
		t.Errorf("held line %+v; want 2 open, 1 released (6 EUR), 2 voided", h)
	}
	audit, _ := farthingCLI(t, "quarantine", "list", "--state", "all", "--data", g.data)
	if !strings.Contains(audit, "site confirmed a fast charger") || strings.Count(audit, "voided") != 2 {
		t.Errorf("quarantine list --state all:\n%s", audit)
	}
	resp, err := operatorGet(g.data, "/audit")
	if err != nil {
		t.Fatal(err)
	}
	var ops []ledger.Operation
	json.NewDecoder(resp.Body).Decode(&ops)
	resp.Body.Close()
	kinds := map[string]int{}
	for _, o := range ops {
		kinds[o.Kind]++
	}
	if kinds["release"] != 1 || kinds["void"] != 2 {
		t.Errorf("audit log %+v; want 1 release and 2 voids", ops)
	}

	// The provider saw every hold and what became of it, and booked the
	// money the gateway charged, to the nano, with no gap.
	deadline := time.Now().Add(20 * time.Second)
	for {
		prep := recv.report(t)
		var total uint64
		for _, tt := range prep.Totals {
			total += tt.Amount
		}
		states := map[string]int{}
		for _, h := range prep.Quarantine {
			states[h.Action]++
		}
		missing := uint64(0)
		for _, s := range prep.Streams {
			missing += s.Missing
		}
		if total == charged && states[protocol.HoldHeld] == 2 && states[protocol.HoldReleased] == 1 && states[protocol.HoldVoided] == 2 && missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("provider: total %d (want %d), quarantine %v, missing %d", total, charged, states, missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
	backwardsToldApart(t, g)
}

// backwardsToldApart: a low reading between good ones (a glitch) holds
// the low register and the next reading is charged from the last good
// register, not from the glitch; a meter that really restarted from zero
// is charged from its held reading; the held registers wait for an
// operator and are never charged by themselves.
func backwardsToldApart(t *testing.T, g *gatewayDir) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dev, err := dialDevice(ctx, g, "meter-2")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	const wh = 300_000 // 0.30 EUR a kWh
	for _, c := range []struct {
		reg     uint64
		status  protocol.Status
		charged uint64
	}{
		{10_000, protocol.StatusAccepted, 0},          // baseline
		{11_000, protocol.StatusAccepted, 1_000 * wh}, // 1,000 Wh
		{5_000, protocol.StatusHeld, 0},               // a glitch: held
		{11_500, protocol.StatusAccepted, 500 * wh},   // from 11,000, not from 5,000
		{200, protocol.StatusHeld, 0},                 // the meter restarted from zero: held
		{900, protocol.StatusAccepted, 700 * wh},      // from the held 200
	} {
		if r := dev.send(t, c.reg); r.Status != c.status || r.Charged != c.charged {
			t.Fatalf("meter-2 register %d: %+v; want %v, charged %d", c.reg, r, c.status, c.charged)
		}
	}
	for seq, want := range map[uint64]uint64{3: 5_000, 5: 200} {
		resp, err := operatorGet(g.data, fmt.Sprintf("/holds/meter-2/%d", seq))
		if err != nil {
			t.Fatal(err)
		}
		var h ledger.Held
		json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if h.Rule != "register_backwards" || h.State != protocol.HoldHeld || h.Usage[0].Quantity != want {
			t.Errorf("meter-2/%d: %+v; want %d units held as register_backwards", seq, h, want)
		}
	}
}

// TestFraudScenarioOverMQTT is the fraud scenario of the README against a
// real daemon: a cloned device (same key, another address) sends a higher
// seq and a made-up register — held, not charged; the genuine device's
// tickets then come back superseded, enough signs of a clone: the device
// is suspended, its session closed, its login refused. A second device is revoked through the CLI:
// its session is closed at once and it cannot log in again. Nothing the
// clone sent is charged, and the books reconcile with the held line.
func TestFraudScenarioOverMQTT(t *testing.T) {
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"meter-1", "meter-2"}, "", "fraud: {clones: suspend, clone_signals: 3}\n")
	if err := os.WriteFile(filepath.Join(g.data, "tariffs.yaml"), []byte(plausibleTariff), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	genuine, err := dialDevice(ctx, g, "meter-1")
	other, err2 := dialDevice(ctx, g, "meter-2")
	cancel()
	if err != nil || err2 != nil {
		t.Fatal(err, err2)
	}
	defer genuine.Close()
	defer other.Close()
	for _, reg := range []uint64{1_000, 2_000} {
		if r := genuine.send(t, reg); r.Status != protocol.StatusAccepted {
			t.Fatalf("genuine %d: %+v", reg, r)
		}
	}
	other.send(t, 500)
	genuine.Close() // offline for a moment: the clone gets its session

	// The clone: the same key, from 127.0.0.2, seq 1000, a register far ahead.
	s := g.secrets["meter-1"]
	opts := paho.NewClientOptions().AddBroker("tcp://" + g.mqtt).SetClientID("meter-1").SetUsername("meter-1").
		SetPassword(s.MQTTPassword()).SetAutoReconnect(false).SetDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}})
	clone := paho.NewClient(opts)
	if tok := clone.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("clone: %v", tok.Error())
	}
	signer, _ := s.Signer()
	var enc protocol.Encoder
	b, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: "meter-1", Seq: 1000, Time: uint64(time.Now().UnixMilli()),
		Readings: []protocol.Reading{{Meter: "energy_wh", Register: 102_000}}}, signer)
	clone.Publish("farthing/v1/meter-1/ticket", 1, false, b).Wait()
	// The quarantine shows what became of the ticket.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := operatorGet(g.data, "/holds/meter-1/1000")
		if err == nil && resp.StatusCode == 200 {
			var h ledger.Held
			json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if h.Rule != "register_jump" || h.Usage[0].Quantity != 100_000 {
				t.Fatalf("the clone's ticket: %+v; want held, register_jump, 100000 units", h)
			}
			break
		}
		if resp != nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the clone's ticket was not held:\n%s", g.logText())
		}
	}
	clone.Disconnect(100)

	// The genuine device comes back and goes on with its own seqs:
	// superseded, until the signs suspend it.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	genuine, err = dialDevice(ctx, g, "meter-1")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer genuine.Close()
	genuine.reg = 2_000
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(g.logText(), "device suspended") {
		if time.Now().After(deadline) {
			t.Fatalf("the cloned device was not suspended:\n%s", g.logText())
		}
		genuine.reg += 1000
		genuine.Report(uint64(time.Now().UnixMilli()), []devicefw.Reading{{Meter: 0, Register: genuine.reg}})
		time.Sleep(300 * time.Millisecond)
	}
	for _, want := range []string{"device may be cloned", "sign=clone_sign_superseded_seq", `device session closed: the device was suspended" device=meter-1`} {
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(g.logText(), want); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("log lacks %q:\n%s", want, g.logText())
			}
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	if again, err := dialDevice(ctx, g, "meter-1"); err == nil {
		again.Close()
		t.Error("a suspended device logged in")
	}
	cancel()

	// A revoked device: its session closed at once, its login refused.
	if out, err := farthingCLI(t, "device", "revoke", "--id", "meter-2", "--data", g.data); err != nil {
		t.Fatalf("device revoke: %v %s", err, out)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(g.logText(), `device=meter-2 transport=mqtt sessions=1`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the revoked device's session was not closed:\n%s", g.logText())
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	if again, err := dialDevice(ctx, g, "meter-2"); err == nil {
		again.Close()
		t.Error("a revoked device logged in")
	}
	cancel()

	// Nothing the clone sent was charged: 1 kWh of the genuine device.
	rep := inspect(t, g.data)
	if !rep.Reconcile.Balanced || rep.Reconcile.LedgerCharged != 300_000_000 || rep.Reconcile.Held.Open != 1 {
		t.Errorf("reconcile %+v; want 0.30 EUR charged, the clone's ticket held", rep.Reconcile)
	}
	resp, err := operatorGet(g.data, "/devices/suspended")
	if err != nil {
		t.Fatal(err)
	}
	var sus []ledger.Suspension
	json.NewDecoder(resp.Body).Decode(&sus)
	resp.Body.Close()
	if len(sus) != 1 || sus[0].Device != "meter-1" {
		t.Errorf("suspended %+v", sus)
	}
	if out, err := farthingCLI(t, "device", "resume", "--id", "meter-1", "--data", g.data); err != nil || !strings.Contains(out, "resumed") {
		t.Fatalf("device resume: %v %s", err, out)
	}
	if out, err := farthingCLI(t, "device", "resume", "--id", "meter-1", "--data", g.data); err == nil {
		t.Errorf("resuming a device not suspended: %s", out)
	}
}
