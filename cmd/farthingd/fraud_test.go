package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
    plausibility: {max_rate: 3600000/h, max_jump: 50000}
`

// send reports register reg and waits for its receipt.
func (d *testDevice) send(t *testing.T, reg uint64) protocol.Receipt {
	t.Helper()
	d.reg = reg - 1000
	return d.report(t)
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
	g := newGatewayDir(t, []string{"meter-1"}, "", fmt.Sprintf(`upstreams:
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

	out, err := farthingCLI(t, "quarantine", "list", "--data", g.data, "--format", "json")
	var held []ledger.Held
	if err != nil || json.Unmarshal([]byte(out), &held) != nil || len(held) != 4 {
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
	if h := rep.Reconcile.Held; h.Open != 1 || h.Released != 1 || h.Voided != 2 || h.Charged != 6_000_000_000 {
		t.Errorf("held line %+v; want 1 open, 1 released (6 EUR), 2 voided", h)
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
		if total == charged && states[protocol.HoldHeld] == 1 && states[protocol.HoldReleased] == 1 && states[protocol.HoldVoided] == 2 && missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("provider: total %d (want %d), quarantine %v, missing %d", total, charged, states, missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
