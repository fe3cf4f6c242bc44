package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/sim"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/registry"
)

// TestSimOverCoAP: the simulator's CoAP mode, 30 devices with their own
// DTLS sessions against an in-process gateway, every ticket accepted and
// the books balanced.
func TestSimOverCoAP(t *testing.T) {
	data := t.TempDir()
	var rf registry.File
	var devs []sim.Device
	for i := 0; i < 30; i++ {
		typ := "hmac"
		if i%2 == 1 {
			typ = "ed25519"
		}
		e, s, err := registry.NewDevice(fmt.Sprintf("cell-%02d", i), typ, "fleet", "utility", map[string]string{"energy_wh": "energy"})
		if err != nil {
			t.Fatal(err)
		}
		rf.Devices = append(rf.Devices, e)
		devs = append(devs, sim.Device{Entry: e, Secrets: s})
	}
	if err := registry.WriteFile(filepath.Join(data, "devices.yaml"), &rf); err != nil {
		t.Fatal(err)
	}
	terms := paywordTerms(data)
	g, _ := runGateway(t, data, func(c *gateway.Config) {
		terms(c)
		c.DTLS.Listen = "127.0.0.1:0"
		c.DTLS.HandshakeRate, c.DTLS.HandshakeBurst = 1000, 1000
	})
	rep, err := sim.Run(context.Background(), sim.Config{Transport: "coaps", CoAPAddr: g.CoAPAddr(), Devices: devs,
		Rate: 300, Duration: time.Second, Drain: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent < 30 || rep.Accepted != rep.Sent || rep.Missing != 0 || rep.BadReceipts != 0 || rep.HandshakesPerSecond == 0 {
		t.Fatalf("sim over CoAP: %+v", rep)
	}
	ir, err := g.Books().Inspect(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ir.Reconcile.Balanced || uint64(ir.Reconcile.ReceiptsCharged) != rep.Charged["EUR"] {
		t.Fatalf("books %+v; sim saw %d", ir.Reconcile, rep.Charged["EUR"])
	}
	t.Logf("%d tickets over DTLS, %.0f handshakes/s at setup, p99 %v", rep.Accepted, rep.HandshakesPerSecond, rep.P99)
}
