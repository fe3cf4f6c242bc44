package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/mqttdev"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// TestPaywordDeviceEndToEnd: a payword device against a real daemon over
// MQTT commits to a chain and reports usage as paywords; the operator API
// serves the chain's commitment and last payword, and the provider
// package verifies the usage from them alone — the same quantity the
// receipts charged for — and refuses them with a payword changed or with
// another device's key.
func TestPaywordDeviceEndToEnd(t *testing.T) {
	bin := buildDaemon(t)
	recvAddr := freeAddr(t, "tcp")
	g := newGatewayDir(t, []string{"pw-plug", "other"}, "", fmt.Sprintf(`upstreams:
  - {name: provider, type: http, url: "http://%s/aggregates"}
forward: {backoff_min: 20ms, backoff_max: 200ms}
`, recvAddr))
	pub, _ := makeGatewayKey(t, g.data)
	recv := startReceiverAt(t, recvAddr, pub)
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	s := g.secrets["pw-plug"]
	signer, _ := s.Signer()
	rv, _ := s.ReceiptVerifier()
	c, err := devicefw.New(devicefw.Config{Device: "pw-plug", Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 4*128), SlotSize: 128})
	if err != nil {
		t.Fatal(err)
	}
	var ch devicefw.Chain
	const n = 1 << 16
	terms := protocol.Commitment{Device: "pw-plug", Chain: protocol.ChainID{0xfa, 0x27}, Number: 1, Meter: "energy_wh", Units: 1,
		Start: 0, Expiry: uint64(time.Now().Add(24 * time.Hour).UnixMilli())}
	if err := ch.Init(terms, 0, protocol.Payword{0x5e, 0xed}, n, make([]devicefw.ChainFrame, devicefw.ChainFrames(n))); err != nil {
		t.Fatal(err)
	}
	receipts := make(chan protocol.Receipt, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dev, err := mqttdev.Connect(ctx, mqttdev.Config{Broker: "tcp://" + g.mqtt, Device: "pw-plug", Password: s.MQTTPassword(), Client: c,
		OnReceipt: func(r protocol.Receipt, err error) {
			if err == nil || errors.Is(err, devicefw.ErrNotPending) {
				receipts <- r
			}
		}})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	next := func() protocol.Receipt {
		t.Helper()
		select {
		case r := <-receipts:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no receipt within 10 s")
			return protocol.Receipt{}
		}
	}
	if err := dev.Commit(&ch); err != nil {
		t.Fatal(err)
	}
	if r := next(); r.Status != protocol.StatusAccepted {
		t.Fatalf("commitment: %+v", r)
	}
	var charged uint64
	for _, i := range []uint32{250, 1000, 1001, 4000} { // Wh
		if _, err := dev.ReportPayword(&ch, i); err != nil {
			t.Fatal(err)
		}
		r := next()
		if r.Status != protocol.StatusAccepted {
			t.Fatalf("index %d: %+v", i, r)
		}
		charged += r.Charged
	}
	if charged != 4000*300_000 { // 4 kWh at 0.30 EUR
		t.Fatalf("charged %d nanos; want %d", charged, 4000*300_000)
	}

	resp, err := operatorGet(g.data, "/chains/pw-plug")
	if err != nil {
		t.Fatal(err)
	}
	var chains []ledger.ChainView
	err = json.NewDecoder(resp.Body).Decode(&chains)
	resp.Body.Close()
	if err != nil || len(chains) != 1 || chains[0].Last != 4000 || chains[0].Register != 4000 {
		t.Fatalf("GET /chains/pw-plug: %+v %v", chains, err)
	}
	cv := chains[0]
	proof := provider.PaywordProof{Commitment: cv.Commitment, From: 0, FromWord: ch.Commitment().Anchor, To: cv.Last, ToWord: cv.LastWord}
	deviceKey := signer.(protocol.Verifier) // an HMAC device: its ticket key MACs the commitment
	u, err := provider.VerifyPayword(proof, deviceKey)
	if err != nil || u.Quantity != 4000 || u.Device != "pw-plug" || u.Meter != "energy_wh" {
		t.Fatalf("provider verification: %+v %v; want 4000 Wh of pw-plug", u, err)
	}
	// Usage between two points of the chain.
	w1000 := protocol.PaywordWalk(&cv.Chain, cv.LastWord, 3000)
	if u, err := provider.VerifyPayword(provider.PaywordProof{Commitment: cv.Commitment, From: 1000, FromWord: w1000, To: 4000, ToWord: cv.LastWord}, deviceKey); err != nil || u.Quantity != 3000 {
		t.Fatalf("from 1000 to 4000: %+v %v", u, err)
	}
	bad := proof
	bad.ToWord[0] ^= 1
	if _, err := provider.VerifyPayword(bad, deviceKey); !errors.Is(err, provider.ErrPayword) {
		t.Fatalf("a changed payword: %v", err)
	}
	more := proof
	more.To = 4001 // claims one more step with the same payword
	if _, err := provider.VerifyPayword(more, deviceKey); !errors.Is(err, provider.ErrPayword) {
		t.Fatalf("a stretched proof: %v", err)
	}
	otherKey, _ := g.secrets["other"].Signer()
	if _, err := provider.VerifyPayword(proof, otherKey.(protocol.Verifier)); !errors.Is(err, provider.ErrPayword) {
		t.Fatalf("another device's key: %v", err)
	}
	if rep := inspect(t, g.data); !rep.Reconcile.Balanced || uint64(rep.Reconcile.ReceiptsCharged) != charged {
		t.Fatalf("books: %+v", rep.Reconcile)
	}

	// Upstream: the gateway sends the chain's progress in its stream, each
	// record naming the aggregate whose window holds the usage, and the
	// provider's receiver proves the usage itself from them: the 4000 Wh
	// the aggregates claim as payword usage, every claim reconciled. The
	// device MACs its commitment (an HMAC device): proven, but unattested.
	var tot provider.PaywordTotal
	var rep *provider.Report
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		rep = recv.report(t)
		for _, p := range rep.Paywords {
			if p.Provider == "utility" && p.Account == "fleet" && p.Meter == "energy_wh" {
				tot = p
			}
		}
		if tot.Quantity == 4000 && tot.Claimed == 4000 && len(rep.PaywordClaims) == 0 {
			break
		}
	}
	if tot.Quantity != 4000 || tot.Claimed != 4000 || tot.Unattested != 4000 || len(rep.PaywordClaims) != 0 {
		t.Fatalf("the receiver proved %+v of payword usage, claims open %+v; want 4000 Wh proven of 4000 claimed", tot, rep.PaywordClaims)
	}
	if rep.Stats.UnprovenPaywords != 0 || len(rep.Held) != 0 {
		t.Fatalf("receiver: %+v, held %+v", rep.Stats, rep.Held)
	}
	for s, gaps := range rep.Gaps {
		if len(gaps) != 0 {
			t.Fatalf("stream %s has gaps %v", s, gaps)
		}
	}
}
