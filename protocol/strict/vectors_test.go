package strict_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/farthing-iot/farthing/internal/vectors"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

var update = flag.Bool("update", false, "rewrite protocol/testdata/vectors.json")

const vectorsPath = "../testdata/vectors.json"

// vectorSpecs are the messages of the vectors file. Invalid ones are built
// with the cb builder of strict_test.go.
func vectorSpecs(t *testing.T, f *vectors.File) []vectors.Vector {
	mac, _ := f.Signer("hmac")
	ed, _ := f.Signer("ed25519")
	root := bytes.Repeat([]byte{0xab}, 32)
	var vs []vectors.Vector
	addDevice := func(name string, gr *protocol.GrantRequest, rl *protocol.Release) {
		var enc protocol.Encoder
		v := vectors.Vector{Name: name, Key: "hmac", Valid: true, GrantRequest: gr, Release: rl}
		var b []byte
		var err error
		if gr != nil {
			v.Kind = "grant_request"
			b, err = enc.AppendGrantRequest(nil, gr, mac)
		} else {
			v.Kind = "release"
			b, err = enc.AppendRelease(nil, rl, mac)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		v.Hex = hex.EncodeToString(b)
		vs = append(vs, v)
	}
	addControl := func(name string, c *protocol.Command, a *protocol.CommandAck) {
		v := vectors.Vector{Name: name, Key: "ed25519", Valid: true, Command: c, CommandAck: a}
		var b []byte
		var err error
		if c != nil {
			v.Kind = "command"
			b, err = protocol.SignCommand(c, ed)
		} else {
			v.Kind = "command_ack"
			var enc protocol.Encoder
			b, err = enc.AppendCommandAck(nil, a, ed)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		v.Hex = hex.EncodeToString(b)
		vs = append(vs, v)
	}
	add := func(name, key string, tk *protocol.Ticket, rc *protocol.Receipt, ag *protocol.Aggregate) {
		s := mac
		if key == "ed25519" {
			s = ed
		}
		var enc protocol.Encoder
		var b []byte
		var err error
		v := vectors.Vector{Name: name, Key: key, Valid: true, Ticket: tk, Receipt: rc, Aggregate: ag}
		switch {
		case tk != nil:
			v.Kind = "ticket"
			b, err = enc.AppendTicket(nil, tk, s)
		case rc != nil:
			v.Kind = "receipt"
			b, err = enc.AppendReceipt(nil, rc, s)
		default:
			v.Kind = "aggregate"
			b, err = enc.AppendAggregate(nil, ag, s)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		v.Hex = hex.EncodeToString(b)
		vs = append(vs, v)
	}
	invalid := func(name, kind, key string, b []byte, reason protocol.Reason) {
		vs = append(vs, vectors.Vector{Name: name, Kind: kind, Key: key, Reason: reason.String(), Hex: hex.EncodeToString(b)})
	}
	reading := func(m string, v uint64) protocol.Reading { return protocol.Reading{Meter: m, Register: v} }

	add("ticket-hmac-minimal", "hmac", &protocol.Ticket{Device: "plug-0001", Seq: 1, Time: 1_790_000_000_000,
		Readings: []protocol.Reading{reading("energy_wh", 0)}}, nil, nil)
	add("ticket-ed25519-charger", "ed25519", &protocol.Ticket{Device: "evse-17", Seq: 100_001, Time: 1_790_000_123_456,
		Readings: []protocol.Reading{reading("energy_wh", 48_213), reading("session_ms", 3_600_000)}, Session: "s-2026-11-22-0007"}, nil, nil)
	add("ticket-hmac-epoch-account", "hmac", &protocol.Ticket{Device: "modem.eu-3", Seq: 4_294_967_296, Time: 1_790_000_000_001, Epoch: 3,
		Readings: []protocol.Reading{reading("data_bytes", 1<<40), reading("sms", 23), reading("voice_ms", 24)}, Account: "acct-42"}, nil, nil)
	add("receipt-hmac-accepted", "hmac", nil, &protocol.Receipt{Device: "plug-0001", Seq: 1, Status: protocol.StatusAccepted,
		Charged: 12_500, Balance: 4_987_500, HasBalance: true, Currency: "EUR"}, nil)
	add("receipt-hmac-duplicate", "hmac", nil, &protocol.Receipt{Device: "plug-0001", Seq: 1, Status: protocol.StatusDuplicate, Charged: 12_500}, nil)
	add("receipt-hmac-rejected", "hmac", nil, &protocol.Receipt{Device: "plug-0001", Seq: 2, Status: protocol.StatusRejected, Reason: protocol.ReasonRegisterBackwards}, nil)
	add("receipt-hmac-insufficient-funds", "hmac", nil, &protocol.Receipt{Device: "plug-0001", Seq: 3, Status: protocol.StatusInsufficientFunds,
		Balance: -250, HasBalance: true, Currency: "EUR"}, nil)
	add("receipt-ed25519-retry-later", "ed25519", nil, &protocol.Receipt{Device: "evse-17", Seq: 100_001, Status: protocol.StatusRetryLater,
		Reason: protocol.ReasonStorageFull, RetryAfter: 30_000}, nil)
	add("aggregate-ed25519", "ed25519", nil, nil, &protocol.Aggregate{Gateway: "gw-berlin-1", Seq: 1, Provider: "stadtwerk", Account: "acct-42",
		Meter: "energy_wh", WindowStart: 1_790_000_000_000, WindowEnd: 1_790_003_600_000, Quantity: 48_213, Amount: 14_463_900_000,
		Currency: "EUR", Tickets: 60, MerkleRoot: root})
	add("aggregate-ed25519-correction", "ed25519", nil, nil, &protocol.Aggregate{Gateway: "gw-berlin-1", Seq: 2, Provider: "stadtwerk", Account: "acct-42",
		Meter: "energy_wh", WindowStart: 1_790_000_000_000, WindowEnd: 1_790_003_600_000, Quantity: 12, Amount: 3_600_000,
		Currency: "EUR", Tickets: 1, MerkleRoot: root, Corrects: 1})
	add("aggregate-ed25519-stream-epoch", "ed25519", nil, nil, &protocol.Aggregate{Gateway: "gw-berlin-1", Seq: 1, Provider: "stadtwerk", Account: "acct-42",
		Meter: "energy_wh", WindowStart: 1_790_000_000_000, WindowEnd: 1_790_003_600_000, Quantity: 48_213, Amount: 14_463_900_000,
		Currency: "EUR", Tickets: 60, MerkleRoot: root, Epoch: 0x5eed_0f_f4_2a_17_c0_01})
	add("aggregate-ed25519-tariff-version", "ed25519", nil, nil, &protocol.Aggregate{Gateway: "gw-berlin-1", Seq: 3, Provider: "stadtwerk", Account: "acct-42",
		Meter: "energy_wh", WindowStart: 1_790_003_600_000, WindowEnd: 1_790_005_000_000, Quantity: 2_000, Amount: 1_000_000_000,
		Currency: "EUR", Tickets: 2, MerkleRoot: root, Epoch: 7, Tariff: "tariff-2027"})
	add("receipt-hmac-superseded", "hmac", nil, &protocol.Receipt{Device: "plug-0001", Seq: 4, Status: protocol.StatusDuplicate,
		Reason: protocol.ReasonSuperseded}, nil)
	add("receipt-hmac-voucher", "hmac", nil, &protocol.Receipt{Device: "kiosk-1", Status: protocol.StatusAccepted,
		Balance: 20_002_000_000, HasBalance: true, Currency: "EUR", Voucher: "V-0001"}, nil)
	add("receipt-hmac-low-balance", "hmac", nil, &protocol.Receipt{Device: "kiosk-1", Seq: 9, Status: protocol.StatusAccepted, Charged: 300_000_000,
		Balance: 400_000_000, HasBalance: true, Currency: "EUR", LowBalance: true}, nil)
	add("receipt-hmac-spending-cap", "hmac", nil, &protocol.Receipt{Device: "plug-0001", Seq: 5, Status: protocol.StatusInsufficientFunds,
		Reason: protocol.ReasonSpendingCap, Balance: 12_000_000_000, HasBalance: true, Currency: "EUR"}, nil)
	add("receipt-hmac-with-time", "hmac", nil, &protocol.Receipt{Device: "plug-0001", Seq: 7, Status: protocol.StatusAccepted,
		Charged: 12_500, Time: 1_790_000_000_123}, nil)
	add("receipt-hmac-time-answer", "hmac", nil, &protocol.Receipt{Device: "plug-0001", Status: protocol.StatusAccepted,
		Time: 1_790_000_000_456, Nonce: [8]byte{0, 0, 0, 0, 0, 0, 0, 42}}, nil)
	add("receipt-hmac-held", "hmac", nil, &protocol.Receipt{Device: "plug-0001", Seq: 6, Status: protocol.StatusHeld,
		Reason: protocol.ReasonRegisterFault, Balance: 12_000_000_000, HasBalance: true, Currency: "EUR"}, nil)

	grant := protocol.Grant{ID: 41, Meter: "energy_wh", Limit: 30_000, Threshold: 26_000, Reserved: 3_000_000_000,
		Expiry: 1_790_000_900_000, Validity: 900_000, Idle: 120_000, Final: protocol.FinalContinue, Grace: 500}
	addDevice("grant-request-hmac-units", &protocol.GrantRequest{Device: "evse-17", Request: 41, Meter: "energy_wh",
		Register: 20_000, Units: 10_000}, nil)
	addDevice("grant-request-hmac-amount-epoch", &protocol.GrantRequest{Device: "evse-17", Request: 42, Meter: "energy_wh",
		Register: 7, Epoch: 2, Amount: 5_000_000_000}, nil)
	addDevice("release-hmac", nil, &protocol.Release{Device: "evse-17", Request: 57, Grant: 41, Register: 29_410})
	add("ticket-hmac-under-grant", "hmac", &protocol.Ticket{Device: "evse-17", Seq: 43, Time: 1_790_000_300_000,
		Readings: []protocol.Reading{reading("energy_wh", 24_000)}, Grant: 41}, nil, nil)
	add("receipt-hmac-grant", "hmac", nil, &protocol.Receipt{Device: "evse-17", Seq: 41, Status: protocol.StatusAccepted,
		Balance: 7_000_000_000, HasBalance: true, Currency: "EUR", Time: 1_790_000_000_000, Grant: grant}, nil)
	closed := grant
	closed.Reserved, closed.Closed, closed.Final, closed.Grace, closed.Epoch = 0, protocol.GrantReleased, protocol.FinalStop, 0, 2
	add("receipt-hmac-grant-released", "hmac", nil, &protocol.Receipt{Device: "evse-17", Seq: 57, Status: protocol.StatusAccepted,
		Balance: 7_177_000_000, HasBalance: true, Currency: "EUR", Grant: closed}, nil)

	cmd := func(seq uint64, id, action string) protocol.Command {
		return protocol.Command{Target: "gw-berlin-1", Seq: seq, ID: id, NotBefore: 1_790_000_000_000, Expiry: 1_790_086_400_000, Action: action}
	}
	c1 := cmd(1, "cmd-0001", protocol.ActionTariffSet)
	c1.Tariffs, c1.Effective = "tariffs:\n  - {id: energy, currency: EUR, period: none, price: 0.32 EUR, per: 1000}\n", 1_790_043_200_000
	c2 := cmd(2, "cmd-0002", protocol.ActionAdjust)
	c2.Account, c2.Amount, c2.Currency, c2.Reason, c2.Ref, c2.Voucher = "kiosk", -500_000_000, "EUR", "double_redemption", "fix-V-TWICE", "V-TWICE"
	c3 := cmd(3, "cmd-0003", protocol.ActionRevokeVoucher)
	c3.Vouchers = []string{"V-STOLEN-1", "V-STOLEN-2"}
	c4 := cmd(7, "cmd-0004", protocol.ActionRevokeDevice)
	c4.Group, c4.Target = true, "berlin"
	c4.KeyIDs = [][]byte{{1, 2, 3, 4, 5, 6, 7, 8}}
	c5 := cmd(4, "cmd-0005", protocol.ActionProvision)
	c5.Device, c5.PublicKey, c5.Account, c5.Provider = "evse-9", bytes.Repeat([]byte{0x42}, 32), "fleet", "stadtwerk"
	c5.Meters = []protocol.MeterTerms{{Meter: "energy_wh", Tariff: "evse-dc"}, {Meter: "session_ms", Tariff: "parking"}}
	for i, c := range []*protocol.Command{&c1, &c2, &c3, &c4, &c5} {
		addControl(fmt.Sprintf("command-ed25519-%s-%d", c.Action, i+1), c, nil)
	}
	addControl("command-ack-ed25519-applied", nil, &protocol.CommandAck{Gateway: "gw-berlin-1", Seq: 42, Command: "cmd-0001", Target: "gw-berlin-1",
		Number: 1, Time: 1_790_000_100_000, Action: protocol.ActionTariffSet, Epoch: 7})
	addControl("command-ack-ed25519-refused", nil, &protocol.CommandAck{Gateway: "gw-berlin-1", Seq: 43, Command: "cmd-0004", Target: "berlin",
		Group: true, Number: 7, Refused: true, Reason: protocol.ReasonCommandExpired, Time: 1_790_000_200_000, Action: protocol.ActionRevokeVoucher})
	addControl("command-ack-ed25519-local", nil, &protocol.CommandAck{Gateway: "gw-berlin-1", Seq: 44, Command: "local-2", Target: "gw-berlin-1",
		Number: 2, Time: 1_790_000_300_000, Action: protocol.ActionTariffSet, Local: true, Epoch: 7})

	good, _ := hex.DecodeString(vs[0].Hex)
	badSig := bytes.Clone(good)
	badSig[len(badSig)-1] ^= 0x80
	invalid("ticket-bad-mac", "ticket", "hmac", badSig, protocol.ReasonBadSignature)
	invalid("ticket-untagged", "ticket", "hmac", good[1:], protocol.ReasonUnexpectedTag)
	invalid("ticket-trailing-byte", "ticket", "hmac", append(bytes.Clone(good), 0x00), protocol.ReasonMalformed)
	invalid("ticket-unknown-key", "ticket", "hmac", seal(mac, ticketPayload(1, cb{}.u(9).u(1))), protocol.ReasonUnknownField)
	invalid("ticket-duplicate-key", "ticket", "hmac", seal(mac, ticketPayload(1, cb{}.u(3).u(5))), protocol.ReasonNonCanonical)
	invalid("ticket-long-form-seq", "ticket", "hmac", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).raw(0x18, 7).u(3).u(1_790_000_000_000).u(5).arr(1).reading("e_wh", 10)), protocol.ReasonNonCanonical)
	invalid("ticket-indefinite-readings", "ticket", "hmac", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).raw(0x9f).reading("e_wh", 10).raw(0xff)), protocol.ReasonNonCanonical)
	invalid("ticket-duplicate-meter", "ticket", "hmac", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(2).reading("e", 1).reading("e", 2)), protocol.ReasonDuplicateMeter)
	invalid("ticket-topic-wildcard-device", "ticket", "hmac", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev/+").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(1).reading("e", 1)), protocol.ReasonBadName)
	invalid("ticket-is-a-receipt", "ticket", "hmac", seal(mac, cb{}.m(5).u(0).u(2).u(1).t("dev-1").u(2).u(7).u(3).u(0).u(5).u(0)), protocol.ReasonWrongKind)
	invalid("receipt-bad-mac", "receipt", "hmac", func() []byte {
		b, _ := hex.DecodeString(vs[3].Hex)
		b[len(b)-3] ^= 1
		return b
	}(), protocol.ReasonBadSignature)
	invalid("receipt-rejected-without-reason", "receipt", "hmac", seal(mac, cb{}.m(5).u(0).u(2).u(1).t("plug-0001").u(2).u(2).u(3).u(2).u(5).u(0)), protocol.ReasonMissingField)
	invalid("receipt-time-zero", "receipt", "hmac", seal(mac, cb{}.m(6).u(0).u(2).u(1).t("plug-0001").u(2).u(2).u(3).u(0).u(5).u(0).u(11).u(0)), protocol.ReasonNonCanonical)
	invalid("grant-request-units-and-amount", "grant_request", "hmac", seal(mac, cb{}.m(7).u(0).u(12).u(1).t("evse-17").u(2).u(41).u(3).t("energy_wh").u(4).u(0).u(6).u(10).u(7).u(10)), protocol.ReasonFieldRange)
	invalid("grant-request-zero-units", "grant_request", "hmac", seal(mac, cb{}.m(6).u(0).u(12).u(1).t("evse-17").u(2).u(41).u(3).t("energy_wh").u(4).u(0).u(6).u(0)), protocol.ReasonNonCanonical)
	invalid("release-without-register", "release", "hmac", seal(mac, cb{}.m(4).u(0).u(13).u(1).t("evse-17").u(2).u(57).u(3).u(41)), protocol.ReasonMissingField)
	invalid("receipt-grant-threshold-above-limit", "receipt", "hmac", seal(mac, cb{}.m(6).u(0).u(2).u(1).t("evse-17").u(2).u(41).u(3).u(0).u(5).u(0).u(13).
		m(9).u(1).u(41).u(2).t("energy_wh").u(3).u(10).u(4).u(11).u(5).u(1).u(6).u(1_790_000_900_000).u(7).u(900_000).u(8).u(120_000).u(9).u(0)), protocol.ReasonFieldRange)
	invalid("receipt-grant-charged", "receipt", "hmac", seal(mac, cb{}.m(6).u(0).u(2).u(1).t("evse-17").u(2).u(41).u(3).u(0).u(5).u(1).u(13).
		m(9).u(1).u(41).u(2).t("energy_wh").u(3).u(10).u(4).u(9).u(5).u(1).u(6).u(1_790_000_900_000).u(7).u(900_000).u(8).u(120_000).u(9).u(0)), protocol.ReasonFieldRange)
	invalid("command-tariff-set-with-an-account", "command", "ed25519", seal(ed, cb{}.m(10).u(0).u(14).u(1).t("gw-1").u(3).u(1).u(4).t("c-1").u(5).u(1).u(6).u(2).
		u(7).t("tariff_set").u(8).t("tariffs: []").u(9).u(5).u(10).t("kiosk")), protocol.ReasonFieldRange)
	invalid("command-adjust-to-a-group", "command", "ed25519", seal(ed, cb{}.m(13).u(0).u(14).u(1).t("berlin").u(2).u(1).u(3).u(1).u(4).t("c-1").
		u(5).u(1).u(6).u(2).u(7).t("adjust").u(10).t("kiosk").u(11).u(5).u(12).t("EUR").u(13).t("goodwill").u(14).t("r-1")), protocol.ReasonFieldRange)
	invalid("command-ack-refused-without-reason", "command_ack", "ed25519", seal(ed, cb{}.m(9).u(0).u(15).u(1).t("gw-1").u(2).u(5).u(3).t("c-1").
		u(4).t("gw-1").u(6).u(1).u(7).u(1).u(9).u(1_790_000_000_000).u(10).t("adjust")), protocol.ReasonFieldRange)
	invalid("receipt-balance-long-form", "receipt", "hmac", seal(mac, cb{}.m(6).u(0).u(2).u(1).t("plug-0001").u(2).u(2).u(3).u(0).u(5).u(0).u(6).raw(0x38, 0x05)), protocol.ReasonNonCanonical)
	for i := range vs {
		d, err := strict.Diagnose(vs[i].Bytes())
		if err != nil {
			t.Fatalf("%s: Diagnose: %v", vs[i].Name, err)
		}
		vs[i].Diag = d
	}
	return vs
}

func TestVectorsFile(t *testing.T) {
	f := &vectors.File{
		Comment: "Farthing protocol test vectors. Regenerate with: go test ./protocol/strict -run TestVectorsFile -update",
		Keys:    vectors.TestKeys(),
	}
	f.Vectors = vectorSpecs(t, f)
	want, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *update {
		if err := os.WriteFile(vectorsPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date: the encoder changed, or the file was edited. Run with -update if the change is intended.", vectorsPath)
	}
}

// TestVectorsStrict decodes every vector with the gateway's decoder.
func TestVectorsStrict(t *testing.T) {
	f, err := vectors.Load(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			m, err := decodeAs(v.Kind, v.Bytes())
			if err == nil {
				var ver protocol.Verifier
				if ver, err = f.Verifier(v.Key); err != nil {
					t.Fatal(err)
				}
				err = m.Envelope.Verify(ver, nil)
			}
			reason := protocol.ReasonOf(err)
			if v.Valid != (err == nil) || (!v.Valid && reason.String() != v.Reason) {
				t.Fatalf("Decode+Verify = %v; want valid=%v reason=%q", err, v.Valid, v.Reason)
			}
			if !v.Valid {
				return
			}
			switch {
			case v.Ticket != nil && !reflect.DeepEqual(m.Ticket, v.Ticket):
				t.Errorf("ticket = %+v; want %+v", m.Ticket, v.Ticket)
			case v.Receipt != nil && !reflect.DeepEqual(m.Receipt, v.Receipt):
				t.Errorf("receipt = %+v; want %+v", m.Receipt, v.Receipt)
			case v.Aggregate != nil && !reflect.DeepEqual(m.Aggregate, v.Aggregate):
				t.Errorf("aggregate = %+v; want %+v", m.Aggregate, v.Aggregate)
			case v.GrantRequest != nil && !reflect.DeepEqual(m.GrantRequest, v.GrantRequest):
				t.Errorf("grant request = %+v; want %+v", m.GrantRequest, v.GrantRequest)
			case v.Release != nil && !reflect.DeepEqual(m.Release, v.Release):
				t.Errorf("release = %+v; want %+v", m.Release, v.Release)
			case v.Command != nil && !reflect.DeepEqual(m.Command, v.Command):
				t.Errorf("command = %+v; want %+v", m.Command, v.Command)
			case v.CommandAck != nil && !reflect.DeepEqual(m.CommandAck, v.CommandAck):
				t.Errorf("command ack = %+v; want %+v", m.CommandAck, v.CommandAck)
			}
		})
	}
}

// decodeAs decodes b with the decoder for kind, as a gateway expecting that
// kind would.
func decodeAs(kind string, b []byte) (*strict.Message, error) {
	m := &strict.Message{}
	var err error
	switch kind {
	case "ticket":
		var t protocol.Ticket
		m.Envelope, t, err = strict.DecodeTicket(b)
		m.Ticket = &t
	case "receipt":
		var r protocol.Receipt
		m.Envelope, r, err = strict.DecodeReceipt(b)
		m.Receipt = &r
	case "aggregate":
		var a protocol.Aggregate
		m.Envelope, a, err = strict.DecodeAggregate(b)
		m.Aggregate = &a
	default: // a device's grant request or release
		return strict.Decode(b)
	}
	return m, err
}
