package protocol

import (
	"bytes"
	"testing"
)

// testGrantReceipt is a receipt with every grant field at its limit.
func testGrantReceipt() Receipt {
	meter := string(bytes.Repeat([]byte("m"), MaxMeterNameLen))
	return Receipt{Device: string(bytes.Repeat([]byte("d"), MaxDeviceIDLen)), Seq: MaxSeq, Status: StatusAccepted,
		Balance: -1 << 63, HasBalance: true, Currency: "ABCDEFGH", LowBalance: true, Time: 1<<64 - 1,
		Grant: Grant{ID: MaxSeq, Meter: meter, Limit: 1<<64 - 1, Threshold: 1<<64 - 1, Reserved: 1<<64 - 1, Expiry: 1<<64 - 1,
			Validity: 1<<64 - 1, Idle: 1<<64 - 1, Final: FinalContinue, Grace: 1<<64 - 1, Epoch: 1<<64 - 1}}
}

// TestGrantReceiptFits: a receipt carrying a grant with every field at
// its limit, signed, is within MaxReceiptSize, and reads back whole.
func TestGrantReceiptFits(t *testing.T) {
	r := testGrantReceipt()
	mac, _ := NewHMAC(bytes.Repeat([]byte{7}, 32))
	var e Encoder
	b, err := e.AppendReceipt(nil, &r, mac)
	if err != nil {
		t.Fatal(err)
	}
	var env Envelope
	var back Receipt
	if err := ParseGrantReceipt(b, &env, &back); err != nil || back != r {
		t.Fatalf("ParseGrantReceipt = %+v, %v; want %+v", back, err, r)
	}
	if err := ParseReceipt(b, &env, &back); ReasonOf(err) != ReasonUnknownField {
		t.Fatalf("ParseReceipt of a grant = %v; want unknown_field (grants are ParseGrantReceipt's)", err)
	}
	t.Logf("largest grant receipt: %d bytes of %d", len(b), MaxReceiptSize)
}

// TestGrantRules: what a grant, a request and a release may not say.
func TestGrantRules(t *testing.T) {
	ok := Grant{ID: 1, Meter: "e", Limit: 10, Threshold: 8, Reserved: 5, Expiry: 1, Idle: 1}
	bad := map[string]func(g *Grant){
		"threshold above limit": func(g *Grant) { g.Threshold = 11 },
		"no idle timeout":       func(g *Grant) { g.Idle = 0 },
		"grace with stop":       func(g *Grant) { g.Grace = 3 },
		"closed but reserving":  func(g *Grant) { g.Closed = GrantExpired },
		"unknown action":        func(g *Grant) { g.Final = 2 },
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, f := range bad {
		g := ok
		f(&g)
		if g.Validate() == nil {
			t.Errorf("%s: valid", name)
		}
	}
	if (&GrantRequest{Device: "d", Request: 1, Meter: "e"}).Validate() == nil {
		t.Error("a request wanting nothing is valid")
	}
	if (&Release{Device: "d", Request: 1}).Validate() == nil {
		t.Error("a release of no grant is valid")
	}
}

// FuzzGrantMessages: any bytes either fail to parse as a grant request, a
// release or a receipt, or parse into a value that encodes back to exactly
// their payload (one message, one encoding).
func FuzzGrantMessages(f *testing.F) {
	mac, _ := NewHMAC(bytes.Repeat([]byte{5}, 32))
	var e Encoder
	gr, _ := e.AppendGrantRequest(nil, &GrantRequest{Device: "evse-1", Request: 9, Meter: "energy_wh", Register: 100, Units: 5000}, mac)
	f.Add(gr)
	rl, _ := e.AppendRelease(nil, &Release{Device: "evse-1", Request: 12, Grant: 9, Register: 4100, Epoch: 1}, mac)
	f.Add(rl)
	r := testGrantReceipt()
	rc, _ := e.AppendReceipt(nil, &r, mac)
	f.Add(rc)
	f.Fuzz(func(t *testing.T, b []byte) {
		var env Envelope
		var g GrantRequest
		if ParseGrantRequest(b, &env, &g) == nil {
			again, err := appendGrantRequestPayload(nil, &g)
			if err != nil || !bytes.Equal(again, env.Payload) {
				t.Fatalf("grant request %x parsed as %+v, encodes as %x (%v)", env.Payload, g, again, err)
			}
		}
		var rel Release
		if ParseRelease(b, &env, &rel) == nil {
			again, err := appendReleasePayload(nil, &rel)
			if err != nil || !bytes.Equal(again, env.Payload) {
				t.Fatalf("release %x parsed as %+v, encodes as %x (%v)", env.Payload, rel, again, err)
			}
		}
		var rec Receipt
		if ParseGrantReceipt(b, &env, &rec) == nil {
			again, err := AppendReceiptPayload(nil, &rec)
			if err != nil || !bytes.Equal(again, env.Payload) {
				t.Fatalf("receipt %x parsed as %+v, encodes as %x (%v)", env.Payload, rec, again, err)
			}
		}
	})
}
