package protocol_test

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// A voucher round-trips through its text form and the strict decoder,
// verifies with its issuer's key, and a changed byte or a wrong key fails.
func TestVoucherRoundTrip(t *testing.T) {
	s, v := testEd25519(t)
	var enc protocol.Encoder
	vo := protocol.Voucher{ID: "V-0001", Account: "household", Amount: 10_000_000_000, Currency: "EUR", Expiry: 1_800_000_000_000, Issuer: "stadtwerk"}
	b, err := enc.AppendVoucher(nil, &vo, s)
	if err != nil {
		t.Fatal(err)
	}
	text := protocol.VoucherText(b)
	if strings.ContainsAny(text, "+/=") {
		t.Fatalf("text form %q is not base64url without padding", text)
	}
	back, err := protocol.ParseVoucherText(text[:10] + " \n" + text[10:])
	if err != nil || string(back) != string(b) {
		t.Fatalf("ParseVoucherText: %v", err)
	}
	env, got, err := strict.DecodeVoucher(back)
	if err != nil || got != vo {
		t.Fatalf("decoded %+v, %v; want %+v", got, err, vo)
	}
	if err := env.Verify(v, nil); err != nil {
		t.Fatalf("verify: %v", err)
	}
	tampered := append([]byte(nil), b...)
	i := strings.Index(string(tampered), "household")
	tampered[i] = 'H'
	if env, _, err := strict.DecodeVoucher(tampered); err == nil && env.Verify(v, nil) == nil {
		t.Fatal("a tampered voucher verified")
	}
	if _, err := protocol.ParseVoucherText("not*base64"); err == nil {
		t.Fatal("bad text accepted")
	}
	other, _ := protocol.NewEd25519Signer(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	b2, _ := enc.AppendVoucher(nil, &vo, other)
	if env, _, _ := strict.DecodeVoucher(b2); env.Verify(v, nil) == nil {
		t.Fatal("a voucher signed by another key verified")
	}
}

// The largest voucher the rules allow — every id at 64 bytes, an issuer,
// bound to a gateway and a device — fits MaxVoucherSize, and a bound
// voucher reads back bound.
func TestLargestVoucherFits(t *testing.T) {
	id := strings.Repeat("v", protocol.MaxDeviceIDLen)
	v := protocol.Voucher{ID: id, Account: strings.Repeat("a", protocol.MaxAccountLen), Amount: 1<<63 - 1, Currency: "EUR",
		Expiry: 1<<64 - 1, Issuer: id, Gateway: strings.Repeat("g", 64), Device: strings.Repeat("d", 64)}
	signer, _ := protocol.NewEd25519Signer(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	var enc protocol.Encoder
	b, err := enc.AppendVoucher(nil, &v, signer)
	if err != nil {
		t.Fatalf("the largest voucher: %v", err)
	}
	t.Logf("the largest voucher is %d bytes of %d", len(b), protocol.MaxVoucherSize)
	_, back, err := strict.DecodeVoucher(b)
	if err != nil || back != v {
		t.Fatalf("read back: %+v, %v", back, err)
	}
}
