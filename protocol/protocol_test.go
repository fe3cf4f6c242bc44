package protocol_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// Test keys: fixed, so that signatures and vectors are reproducible.
func testEd25519(t testing.TB) (*protocol.Ed25519Signer, *protocol.Ed25519Verifier) {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	s, err := protocol.NewEd25519Signer(priv)
	if err != nil {
		t.Fatal(err)
	}
	v, err := protocol.NewEd25519Verifier(priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func testHMAC(t testing.TB) *protocol.HMAC {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(0x20 + i)
	}
	h, err := protocol.NewHMAC(key)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func sampleTicket() protocol.Ticket {
	return protocol.Ticket{
		Device: "plug-0001", Seq: 42, Time: 1_790_000_000_123,
		Readings: []protocol.Reading{{Meter: "energy_wh", Register: 123456}, {Meter: "on_ms", Register: 98_000}},
	}
}

func fullTicket() protocol.Ticket {
	t := protocol.Ticket{
		Device:  strings.Repeat("d", protocol.MaxDeviceIDLen),
		Seq:     protocol.MaxSeq,
		Time:    1<<64 - 1,
		Epoch:   1<<64 - 1,
		Account: strings.Repeat("a", protocol.MaxAccountLen),
		Session: strings.Repeat("s", protocol.MaxSessionLen),
	}
	for i := 0; i < protocol.MaxReadings; i++ {
		name := strings.Repeat("m", protocol.MaxMeterNameLen-2) + string(rune('a'+i)) + "x"
		t.Readings = append(t.Readings, protocol.Reading{Meter: name, Register: 1<<64 - 1})
	}
	return t
}

func TestTicketRoundTrip(t *testing.T) {
	ed, edv := testEd25519(t)
	mac := testHMAC(t)
	for _, tc := range []struct {
		name string
		s    protocol.Signer
		v    protocol.Verifier
		tk   protocol.Ticket
	}{
		{"ed25519", ed, edv, sampleTicket()},
		{"hmac", mac, mac, sampleTicket()},
		{"ed25519-full", ed, edv, fullTicket()},
		{"hmac-full", mac, mac, fullTicket()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var enc protocol.Encoder
			b, err := enc.AppendTicket(nil, &tc.tk, tc.s)
			if err != nil {
				t.Fatalf("AppendTicket: %v", err)
			}
			env, got, err := strict.DecodeTicket(b)
			if err != nil {
				t.Fatalf("DecodeTicket: %v", err)
			}
			if !reflect.DeepEqual(got, tc.tk) {
				t.Fatalf("DecodeTicket = %+v; want %+v", got, tc.tk)
			}
			if !bytes.Equal(env.KeyID, tc.s.KeyID()) || env.Alg != tc.s.Algorithm() {
				t.Fatalf("envelope alg %v kid %x; want %v %x", env.Alg, env.KeyID, tc.s.Algorithm(), tc.s.KeyID())
			}
			if err := env.Verify(tc.v, nil); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			// Any flipped bit breaks either the decoding or the signature.
			for i := range b {
				bad := bytes.Clone(b)
				bad[i] ^= 0x01
				env, _, err := strict.DecodeTicket(bad)
				if err == nil {
					err = env.Verify(tc.v, nil)
				}
				if err == nil {
					t.Fatalf("ticket with byte %d flipped was accepted", i)
				}
			}
		})
	}
}

// TestMaxSizes pins the limits: a message with every field at its limit
// fits, and the documented worst case is exact.
func TestMaxSizes(t *testing.T) {
	ed, _ := testEd25519(t)
	var enc protocol.Encoder
	tk := fullTicket()
	b, err := enc.AppendTicket(nil, &tk, ed)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 1026 || len(b) > protocol.MaxTicketSize {
		t.Errorf("largest ticket = %d bytes; want 1026 (documented) <= %d", len(b), protocol.MaxTicketSize)
	}
	r := protocol.Receipt{Device: tk.Device, Seq: protocol.MaxSeq, Status: protocol.StatusRetryLater, Reason: protocol.ReasonShuttingDown,
		Charged: 1<<64 - 1, Balance: -1 << 63, HasBalance: true, Currency: "XXXXXXXX", RetryAfter: 1<<32 - 1}
	if b, err = enc.AppendReceipt(nil, &r, ed); err != nil || len(b) > protocol.MaxReceiptSize {
		t.Errorf("largest receipt = %d bytes, %v; want <= %d", len(b), err, protocol.MaxReceiptSize)
	}
	a := protocol.Aggregate{Gateway: tk.Device, Seq: protocol.MaxSeq, Provider: tk.Device, Account: tk.Account, Meter: tk.Readings[0].Meter,
		WindowStart: 1<<64 - 2, WindowEnd: 1<<64 - 1, Quantity: 1<<64 - 1, Amount: 1<<64 - 1, Currency: "XXXXXXXX", Tickets: 1<<64 - 1,
		MerkleRoot: make([]byte, 32), Corrects: protocol.MaxSeq - 1}
	if b, err = enc.AppendAggregate(nil, &a, ed); err != nil || len(b) > protocol.MaxAggregateSize {
		t.Errorf("largest aggregate = %d bytes, %v; want <= %d", len(b), err, protocol.MaxAggregateSize)
	}
}

func TestTicketValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*protocol.Ticket)
		want   protocol.Reason
	}{
		{"ok", func(*protocol.Ticket) {}, protocol.ReasonNone},
		{"empty device", func(t *protocol.Ticket) { t.Device = "" }, protocol.ReasonMissingField},
		{"device with slash", func(t *protocol.Ticket) { t.Device = "a/b" }, protocol.ReasonBadName},
		{"device with wildcard", func(t *protocol.Ticket) { t.Device = "a+" }, protocol.ReasonBadName},
		{"device too long", func(t *protocol.Ticket) { t.Device = strings.Repeat("x", 65) }, protocol.ReasonStringTooLong},
		{"seq 0", func(t *protocol.Ticket) { t.Seq = 0 }, protocol.ReasonFieldRange},
		{"seq 2^63", func(t *protocol.Ticket) { t.Seq = 1 << 63 }, protocol.ReasonFieldRange},
		{"time 0", func(t *protocol.Ticket) { t.Time = 0 }, protocol.ReasonMissingField},
		{"no readings", func(t *protocol.Ticket) { t.Readings = nil }, protocol.ReasonTooManyReadings},
		{"17 readings", func(t *protocol.Ticket) {
			t.Readings = fullTicket().Readings
			t.Readings = append(t.Readings, protocol.Reading{Meter: "x"})
		}, protocol.ReasonTooManyReadings},
		{"duplicate meter", func(t *protocol.Ticket) { t.Readings[1].Meter = t.Readings[0].Meter }, protocol.ReasonDuplicateMeter},
		{"meter too long", func(t *protocol.Ticket) { t.Readings[0].Meter = strings.Repeat("m", 33) }, protocol.ReasonStringTooLong},
		{"meter with space", func(t *protocol.Ticket) { t.Readings[0].Meter = "a b" }, protocol.ReasonBadName},
		{"account with hash", func(t *protocol.Ticket) { t.Account = "#" }, protocol.ReasonBadName},
		{"session too long", func(t *protocol.Ticket) { t.Session = strings.Repeat("s", 65) }, protocol.ReasonStringTooLong},
	} {
		tk := sampleTicket()
		tc.mutate(&tk)
		if got := protocol.ReasonOf(tk.Validate()); got != tc.want {
			t.Errorf("%s: Validate reason = %v; want %v", tc.name, got, tc.want)
		}
	}
}

func TestReceiptParseAgreesWithStrict(t *testing.T) {
	ed, edv := testEd25519(t)
	mac := testHMAC(t)
	receipts := []protocol.Receipt{
		{Device: "plug-0001", Seq: 1, Status: protocol.StatusAccepted, Charged: 12_345},
		{Device: "plug-0001", Seq: 2, Status: protocol.StatusDuplicate, Charged: 7, Balance: 1_000_000_000, HasBalance: true, Currency: "EUR"},
		{Device: "plug-0001", Seq: 3, Status: protocol.StatusRejected, Reason: protocol.ReasonRegisterBackwards},
		{Device: "plug-0001", Seq: 4, Status: protocol.StatusInsufficientFunds, Balance: -5, HasBalance: true, Currency: "EUR"},
		{Device: "plug-0001", Seq: 5, Status: protocol.StatusRetryLater, Reason: protocol.ReasonStorageFull, RetryAfter: 30_000},
	}
	for _, s := range []protocol.Signer{ed, mac} {
		var v protocol.Verifier = mac
		if s == protocol.Signer(ed) {
			v = edv
		}
		for _, want := range receipts {
			var enc protocol.Encoder
			b, err := enc.AppendReceipt(nil, &want, s)
			if err != nil {
				t.Fatal(err)
			}
			var env protocol.Envelope
			var got protocol.Receipt
			if err := protocol.ParseReceipt(b, &env, &got); err != nil {
				t.Fatalf("ParseReceipt(%+v): %v", want, err)
			}
			if got != want {
				t.Errorf("ParseReceipt = %+v; want %+v", got, want)
			}
			if err := env.Verify(v, nil); err != nil {
				t.Errorf("Verify: %v", err)
			}
			senv, sgot, err := strict.DecodeReceipt(b)
			if err != nil || sgot != want || !reflect.DeepEqual(senv, env) {
				t.Errorf("strict.DecodeReceipt = %+v, %v; want %+v", sgot, err, want)
			}
		}
	}
}

func TestVerifyRefusesWrongKeyAndAlg(t *testing.T) {
	ed, _ := testEd25519(t)
	mac := testHMAC(t)
	otherKey := bytes.Repeat([]byte{9}, 32)
	other, _ := protocol.NewHMAC(otherKey)
	var enc protocol.Encoder
	tk := sampleTicket()
	b, _ := enc.AppendTicket(nil, &tk, mac)
	env, _, err := strict.DecodeTicket(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Verify(other, nil); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("Verify with another key = %v; want ErrBadSignature", err)
	}
	_, edv := testEd25519(t)
	if err := env.Verify(edv, nil); !errors.Is(err, protocol.ErrUnsupportedAlg) {
		t.Errorf("Verify with a key of another algorithm = %v; want ErrUnsupportedAlg", err)
	}
	_ = ed
}

func TestEncodeAllocatesNothing(t *testing.T) {
	ed, _ := testEd25519(t)
	mac := testHMAC(t)
	for _, s := range []protocol.Signer{ed, mac} {
		var enc protocol.Encoder
		tk := sampleTicket()
		buf := make([]byte, 0, protocol.MaxTicketSize)
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := enc.AppendTicket(buf, &tk, s); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%v: AppendTicket allocates %v times per ticket; want 0", s.Algorithm(), allocs)
		}
	}
}

func TestDeriveKeySeparatesPurposes(t *testing.T) {
	master := bytes.Repeat([]byte{7}, protocol.MasterSecretSize)
	seen := map[string]protocol.KeyPurpose{}
	for _, p := range []protocol.KeyPurpose{protocol.PurposeTicket, protocol.PurposeReceipt, protocol.PurposeDTLSPSK, protocol.PurposeMQTTPassword} {
		k, err := protocol.DeriveKey(master, p)
		if err != nil || len(k) != 32 {
			t.Fatalf("DeriveKey(%q) = %x, %v", p, k, err)
		}
		if prev, ok := seen[string(k)]; ok {
			t.Fatalf("DeriveKey gives the same key for %q and %q", prev, p)
		}
		seen[string(k)] = p
	}
	if _, err := protocol.DeriveKey(master[:31], protocol.PurposeTicket); !errors.Is(err, protocol.ErrKeySize) {
		t.Errorf("DeriveKey with a short master = %v; want ErrKeySize", err)
	}
}

func TestReasonNames(t *testing.T) {
	rs := protocol.Reasons()
	if len(rs) < 25 {
		t.Fatalf("only %d reasons", len(rs))
	}
	seen := map[string]bool{}
	for i, r := range rs {
		if i > 0 && r <= rs[i-1] {
			t.Errorf("Reasons() not ascending at %v", r)
		}
		name := r.String()
		if seen[name] || strings.HasPrefix(name, "reason_") {
			t.Errorf("reason %d has name %q (duplicate or missing)", r, name)
		}
		seen[name] = true
		var back protocol.Reason
		if err := back.UnmarshalText([]byte(name)); err != nil || back != r {
			t.Errorf("UnmarshalText(%q) = %v, %v", name, back, err)
		}
		if r.Transient() != (r >= 96 && r < 128) {
			t.Errorf("%v.Transient() wrong", r)
		}
	}
	if protocol.Reason(200).Valid() || protocol.Reason(200).String() != "reason_200" {
		t.Errorf("undefined reason 200 reads as defined")
	}
	// Valid is the table's codes exactly, though it does not read it.
	defined := map[protocol.Reason]bool{}
	for _, r := range rs {
		defined[r] = r != protocol.ReasonNone
	}
	for r := protocol.Reason(0); r < 300; r++ {
		if r.Valid() != defined[r] {
			t.Errorf("Reason(%d).Valid() = %v; the table says %v", r, r.Valid(), defined[r])
		}
	}
}
