package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/mqttdev"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/protocol"
)

// TestGrantSurvivesSIGKILL: a charger's grant is in the books, not in
// the process. farthingd is SIGKILLed with a ticket under the grant in
// flight; after the restart the grant is still open with what it
// reserves, the device's ticket is answered once, the release gives back
// the rest, and the account is charged exactly the usage: `farthing
// account show` says so, and the books reconcile.
func TestGrantSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"evse-1@kiosk"}, "", "") // kiosk: 0.60 EUR prepaid; 0.30 EUR per kWh
	d := startDaemon(t, bin, g.config, g.mqtt)
	s := g.secrets["evse-1"]
	signer, _ := s.Signer()
	rv, _ := s.ReceiptVerifier()
	c, err := devicefw.New(devicefw.Config{Device: "evse-1", Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 8*protocol.MaxTicketSize)})
	if err != nil {
		t.Fatal(err)
	}
	receipts := make(chan protocol.Receipt, 100)
	connect := func() *mqttdev.Device {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dev, err := mqttdev.Connect(ctx, mqttdev.Config{Broker: "tcp://" + g.mqtt, Device: "evse-1", Password: s.MQTTPassword(), Client: c,
			OnReceipt: func(r protocol.Receipt, err error) {
				if err == nil || errors.Is(err, devicefw.ErrNotPending) {
					receipts <- r
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		return dev
	}
	next := func() protocol.Receipt {
		t.Helper()
		select {
		case r := <-receipts:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no receipt within 10s")
			return protocol.Receipt{}
		}
	}
	// answerTo waits for the receipt with seq (a ticket's seq, or a
	// request's id): an answer can come twice after a restart (the first
	// send's and the resend's).
	answerTo := func(seq uint64) protocol.Receipt {
		t.Helper()
		for {
			if r := next(); r.Seq == seq {
				return r
			}
		}
	}
	report := func(dev *mqttdev.Device, reg uint64) {
		t.Helper()
		if _, err := dev.Report(uint64(time.Now().UnixMilli()), []devicefw.Reading{{Meter: 0, Register: reg}}); err != nil {
			t.Fatal(err)
		}
	}
	dev := connect()
	report(dev, 1000)
	next()
	dev.RequestGrant(0, 1000, 1500, 0)
	if r := next(); !r.IsGrant() || r.Grant.Reserved != 450_000_000 || r.Balance != 150_000_000 {
		t.Fatalf("grant %+v; want 1.5 kWh, 0.45 EUR reserved, 0.15 available", r)
	}
	report(dev, 2000)
	if r := next(); r.Status != protocol.StatusAccepted || r.Charged != 300_000_000 || r.Balance != 150_000_000 {
		t.Fatalf("ticket under the grant %+v; want 0.30 charged from the reservation, 0.15 still available", r)
	}
	report(dev, 2300) // in flight when the daemon dies
	d.kill(t)
	dev.Close()
	d = startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	view := showAccount(t, g.data, "kiosk")
	if len(view.Grants) != 1 || view.Grants[0].State != "open" || view.Reserved != view.Grants[0].Reserved || view.Reserved == 0 {
		t.Fatalf("after SIGKILL: %+v; want the grant open, its reservation in the account", view)
	}
	dev = connect()
	defer dev.Close()
	dev.ResendPending()
	if r := answerTo(4); (r.Status != protocol.StatusAccepted && r.Status != protocol.StatusDuplicate) || r.Charged != 90_000_000 {
		t.Fatalf("the ticket in flight, again: %+v; want 0.09 EUR charged once", r)
	}
	dev.Release(2300)
	if r := answerTo(5); r.Grant.Closed != protocol.GrantReleased || r.Balance != 210_000_000 {
		t.Fatalf("release %+v; want closed, 0.21 EUR available", r)
	}
	view = showAccount(t, g.data, "kiosk")
	if view.Balance != 210_000_000 || view.Available != 210_000_000 || view.Reserved != 0 || view.Grants[0].Charged != 390_000_000 ||
		view.Grants[0].Released != 60_000_000 {
		t.Fatalf("after the release: %+v; want 0.39 EUR charged, 0.06 given back", view)
	}
	out, err := farthingCLI(t, "account", "show", "kiosk", "--data", g.data)
	if err != nil || !strings.Contains(out, "RESERVED") || !strings.Contains(out, "released") {
		t.Fatalf("account show: %v\n%s", err, out)
	}
	t.Logf("farthing account show kiosk:\n%s", out)
}

// showAccount is `farthing account show ACCOUNT --format json`.
func showAccount(t *testing.T, data, account string) ledger.AccountView {
	t.Helper()
	out, err := farthingCLI(t, "account", "show", account, "--format", "json", "--data", data)
	if err != nil {
		t.Fatalf("account show: %v\n%s", err, out)
	}
	var views []ledger.AccountView
	if err := json.Unmarshal([]byte(out), &views); err != nil || len(views) != 1 {
		t.Fatalf("account show: %v\n%s", err, out)
	}
	return views[0]
}
