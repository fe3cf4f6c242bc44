package gateway_test

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/coapdev"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
)

// TestDeviceRedeemsVoucherOverMQTTAndCoAP: a kiosk whose prepaid account
// ran dry passes on a voucher its customer bought — on its MQTT voucher
// topic, and over CoAP to /v — and is answered with a receipt carrying
// the voucher's id and the new balance; its next ticket is served. A
// replay, and a voucher for another account, are refused with their
// reasons.
func TestDeviceRedeemsVoucherOverMQTTAndCoAP(t *testing.T) {
	priv, pubPath := issuerKey(t)
	tg := startGateway(t, []devSpec{{"kiosk-m", "hmac", "poor"}, {"kiosk-c", "hmac", "poor"}},
		func(c *gateway.Config) { c.VoucherIssuers = []string{pubPath} })
	signer, _ := protocol.NewEd25519Signer(priv)
	voucherFor := func(id, account, device string) []byte {
		var enc protocol.Encoder
		b, err := enc.AppendVoucher(nil, &protocol.Voucher{ID: id, Account: account, Amount: 1_000_000_000, Currency: "EUR",
			Expiry: uint64(time.Now().Add(time.Hour).UnixMilli()), Device: device}, signer)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	voucher := func(id, account string) []byte { return voucherFor(id, account, "") }

	d := connectDevice(t, tg, "kiosk-m")
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 1000}})
	d.next(t)
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 2000}})
	if r := d.next(t); r.Status != protocol.StatusInsufficientFunds {
		t.Fatalf("dry: %+v", r)
	}
	vm := voucher("V-M", "poor")
	if err := d.Redeem(vm); err != nil {
		t.Fatal(err)
	}
	r := d.next(t)
	if r.Voucher != "V-M" || r.Status != protocol.StatusAccepted || r.Seq != 0 || r.Balance != 1_000_001_000 {
		t.Fatalf("voucher over MQTT: %+v; want accepted, voucher V-M, balance 1.000001 EUR", r)
	}
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 3000}})
	if r := d.next(t); r.Status != protocol.StatusAccepted || r.Charged != 600_000_000 {
		t.Fatalf("the kiosk after its voucher: %+v; want 2 kWh charged (the refused one too)", r)
	}
	d.Redeem(vm)
	if r := d.next(t); r.Voucher != "V-M" || r.Status != protocol.StatusRejected || r.Reason != protocol.ReasonVoucherRedeemed {
		t.Fatalf("a replayed voucher: %+v; want rejected, voucher_redeemed", r)
	}

	s := tg.secrets["kiosk-c"]
	signerC, _ := s.Signer()
	rv, _ := s.ReceiptVerifier()
	c, err := devicefw.New(devicefw.Config{Device: "kiosk-c", Meters: []string{"energy_wh"}, Signer: signerC, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 4*protocol.MaxTicketSize)})
	if err != nil {
		t.Fatal(err)
	}
	cd, err := coapdev.Dial(coapdev.Config{Addr: tg.CoAPAddr(), Device: "kiosk-c", PSK: s.DTLSPSK(), Client: c})
	if err != nil {
		t.Fatal(err)
	}
	defer cd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if r, err := cd.Redeem(ctx, voucher("V-X", "prepaid-1")); err != nil || r.Status != protocol.StatusRejected || r.Reason != protocol.ReasonVoucherWrongAccount {
		t.Fatalf("a voucher for another account over CoAP: %+v, %v", r, err)
	}
	// Bound to the other kiosk: refused here; bound to this one: taken.
	if r, err := cd.Redeem(ctx, voucherFor("V-B1", "poor", "kiosk-m")); err != nil || r.Status != protocol.StatusRejected || r.Reason != protocol.ReasonVoucherOtherDevice {
		t.Fatalf("a voucher bound to another device: %+v, %v", r, err)
	}
	r, err = cd.Redeem(ctx, voucherFor("V-C", "poor", "kiosk-c"))
	if err != nil || r.Status != protocol.StatusAccepted || r.Voucher != "V-C" || r.Balance != 1_400_001_000 {
		t.Fatalf("voucher over CoAP: %+v, %v; want accepted, balance 1.400001 EUR", r, err)
	}
	if r, err := cd.Report(ctx, now(), []devicefw.Reading{{Meter: 0, Register: 500}}); err != nil || r.Status != protocol.StatusAccepted {
		t.Fatalf("the CoAP kiosk after its voucher: %+v, %v", r, err)
	}
	rep, _ := tg.Books().Inspect(nil)
	if !rep.Reconcile.Balanced || rep.Reconcile.TopUps != 2_000_000_000 {
		t.Fatalf("books after two vouchers: %+v", rep.Reconcile)
	}
}

// An account below its low_balance level gets the low-balance flag in
// its receipts, counted by account.
func TestLowBalanceFlag(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}}, func(c *gateway.Config) {
		for i := range c.Accounts {
			if c.Accounts[i].ID == "prepaid-1" {
				c.Accounts[i].LowBalance = "9.00" // opens with 10.00
			}
		}
	})
	d := connectDevice(t, tg, "plug-1")
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 1000}})
	d.next(t)
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 2000}}) // 0.30: 9.70 left
	if r := d.next(t); r.Status != protocol.StatusAccepted || r.LowBalance {
		t.Fatalf("9.70 left of a 9.00 level: %+v; want no flag", r)
	}
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 5000}}) // 0.90: 8.80 left
	if r := d.next(t); r.Status != protocol.StatusAccepted || !r.LowBalance || r.Balance != 8_800_000_000 {
		t.Fatalf("8.80 left of a 9.00 level: %+v; want the low-balance flag", r)
	}
	if m := metricsText(t, tg); !strings.Contains(m, `farthing_low_balance_receipts_total{account="prepaid-1"} 1`) {
		t.Fatalf("the flag was not counted")
	}
}

// issuerKey makes a voucher issuer: its private key, and its public key
// file for voucher_issuers.
func issuerKey(t testing.TB) (ed25519.PrivateKey, string) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	path := filepath.Join(t.TempDir(), "issuer.pub")
	pub, _ := (&keyfile.Key{Public: priv.Public().(ed25519.PublicKey)}).EncodePublic()
	if err := os.WriteFile(path, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, path
}
