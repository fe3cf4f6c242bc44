package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// TestTicketNextFollowsTheGateway: `device add` returns once the running
// gateway has loaded the device, and `ticket --next` makes the ticket the
// gateway expects next — seq + 1, the register plus --add — from the
// running daemon, and from the state file once it stopped.
func TestTicketNextFollowsTheGateway(t *testing.T) {
	data := t.TempDir()
	g, stop := runGateway(t, data, paywordTerms(data))
	mustRun(t, nil, "device", "add", "--data", data, "--id", "plug-1", "--account", "fleet", "--provider", "utility", "--tariff", "energy_wh=energy")
	submit := func(add string) protocol.Receipt {
		t.Helper()
		file := filepath.Join(t.TempDir(), "t.cbor")
		mustRun(t, nil, "ticket", "--next", "--data", data, "--device", "plug-1", "--add", add, "--out", file)
		b, _ := os.ReadFile(file)
		return g.Ingest().Submit(context.Background(), entrance.Message{Device: "plug-1", Payload: b, Transport: "test"}).Receipt
	}
	if r := submit("energy_wh=1000"); r.Status != protocol.StatusAccepted || r.Seq != 1 {
		t.Fatalf("first ticket (the device was loaded when device add returned): %+v", r)
	}
	if r := submit("energy_wh=250"); r.Status != protocol.StatusAccepted || r.Seq != 2 || r.Charged != 75_000_000 {
		t.Fatalf("next ticket: %+v; want seq 2 accepted, 250 Wh charged 0.075 EUR", r)
	}
	stop()
	out := filepath.Join(t.TempDir(), "t.cbor")
	mustRun(t, nil, "ticket", "--next", "--data", data, "--device", "plug-1", "--add", "energy_wh=5", "--out", out)
	b, _ := os.ReadFile(out)
	_, tk, err := strict.DecodeTicket(b)
	if err != nil || tk.Seq != 3 || tk.Readings[0].Register != 1255 {
		t.Fatalf("ticket --next from the state file: %+v %v; want seq 3, register 1255", tk, err)
	}
	if code, _, errOut := farthing(t, nil, "ticket", "--next", "--data", data, "--device", "plug-1", "--seq", "9", "--add", "energy_wh=1"); code != exitBad {
		t.Errorf("--next with --seq: exit %d %q; want 2", code, errOut)
	}
}

// TestDecodePaywordMessages: farthing decode shows a payword ticket and a
// chain commitment, and refuses a payword ticket with a field too many.
func TestDecodePaywordMessages(t *testing.T) {
	dir := t.TempDir()
	p := protocol.PaywordTicket{Device: "plug-1", Chain: protocol.ChainID{1, 2}, Index: 5, Word: protocol.Payword{9}}
	pb, _ := protocol.AppendPaywordTicket(nil, &p)
	os.WriteFile(filepath.Join(dir, "p.cbor"), pb, 0o600)
	out := mustRun(t, nil, "decode", filepath.Join(dir, "p.cbor"))
	if !strings.Contains(out, `"kind": "payword"`) || !strings.Contains(out, `"index": 5`) {
		t.Fatalf("decode of a payword ticket:\n%s", out)
	}
	mac, _ := protocol.NewHMAC(make([]byte, 32))
	var enc protocol.Encoder
	cb, err := enc.AppendCommitment(nil, &protocol.Commitment{Device: "plug-1", Chain: protocol.ChainID{1}, Number: 1, Meter: "energy_wh",
		Units: 10, Length: 100, Expiry: 1_900_000_000_000}, mac)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "c.cbor"), cb, 0o600)
	out = mustRun(t, nil, "decode", filepath.Join(dir, "c.cbor"))
	if !strings.Contains(out, `"kind": "commitment"`) || !strings.Contains(out, `"units_per_step": 10`) || !strings.Contains(out, `"cose": "COSE_Mac0"`) {
		t.Fatalf("decode of a commitment:\n%s", out)
	}
	gr, _ := enc.AppendGrantRequest(nil, &protocol.GrantRequest{Device: "evse-1", Request: 7, Meter: "energy_wh", Register: 100, Amount: 5_000_000_000}, mac)
	os.WriteFile(filepath.Join(dir, "g.cbor"), gr, 0o600)
	if out := mustRun(t, nil, "decode", filepath.Join(dir, "g.cbor")); !strings.Contains(out, `"kind": "grant_request"`) || !strings.Contains(out, `"amount": 5000000000`) {
		t.Fatalf("decode of a grant request:\n%s", out)
	}
	bad := append(append([]byte{0xa6}, pb[1:]...), 5, 0)
	os.WriteFile(filepath.Join(dir, "bad.cbor"), bad, 0o600)
	if code, _, errOut := farthing(t, nil, "decode", filepath.Join(dir, "bad.cbor")); code != exitBad || !strings.Contains(errOut, "payword ticket") {
		t.Fatalf("a payword ticket with a field too many: exit %d %q", code, errOut)
	}
}

// TestDeviceCommitRegistersAChain: a payword chain's commitment, made
// with the device's key at provisioning, is registered through the
// operator API by `farthing device commit`; the device's paywords are
// then charged; the same commitment again is a duplicate, and a forged
// one (another key) is refused with exit 2.
func TestDeviceCommitRegistersAChain(t *testing.T) {
	data := t.TempDir()
	g, _ := runGateway(t, data, paywordTerms(data))
	mustRun(t, nil, "device", "add", "--data", data, "--id", "plug-1", "--account", "fleet", "--provider", "utility", "--tariff", "energy_wh=energy")
	key, err := keyfile.Load(filepath.Join(data, "device-keys", "plug-1.secret"))
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := key.Signer(protocol.KindTicket)
	id, seed := protocol.ChainID{7}, protocol.Payword{8}
	c := protocol.Commitment{Device: "plug-1", Chain: id, Number: 1, Meter: "energy_wh", Units: 10, Length: 100,
		Anchor: protocol.PaywordWalk(&id, seed, 100), Expiry: uint64(time.Now().Add(time.Hour).UnixMilli())}
	var enc protocol.Encoder
	cb, _ := enc.AppendCommitment(nil, &c, signer)
	file := filepath.Join(t.TempDir(), "chain.cbor")
	os.WriteFile(file, cb, 0o600)
	if out := mustRun(t, nil, "device", "commit", "--data", data, "--id", "plug-1", "--commitment", file); !strings.Contains(out, "accepted") {
		t.Fatalf("device commit: %q", out)
	}
	if out := mustRun(t, nil, "device", "commit", "--data", data, "--id", "plug-1", "--commitment", file); !strings.Contains(out, "duplicate") {
		t.Fatalf("device commit again: %q", out)
	}
	pw, _ := protocol.AppendPaywordTicket(nil, &protocol.PaywordTicket{Device: "plug-1", Chain: id, Index: 3, Word: protocol.PaywordWalk(&id, seed, 97)})
	if r := g.Ingest().Submit(context.Background(), entrance.Message{Device: "plug-1", Payload: pw, Transport: "test"}).Receipt; r.Status != protocol.StatusAccepted || r.Charged != 9_000_000 {
		t.Fatalf("payword after the registration: %+v; want 30 Wh charged 0.009 EUR", r)
	}
	other, _ := protocol.NewHMAC(make([]byte, 32))
	c.Number, c.Chain = 2, protocol.ChainID{9}
	forged, _ := enc.AppendCommitment(nil, &c, other)
	os.WriteFile(file, forged, 0o600)
	if code, out, errOut := farthing(t, nil, "device", "commit", "--data", data, "--id", "plug-1", "--commitment", file); code != exitBad ||
		!strings.Contains(out+errOut, "unknown_key") {
		t.Fatalf("a commitment under another key: exit %d %q %q", code, out, errOut)
	}
}
