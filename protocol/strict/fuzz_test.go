package strict_test

import (
	"bytes"
	"crypto/ed25519"
	"testing"

	"github.com/farthing-iot/farthing/internal/vectors"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// seedVectors adds every vector of protocol/testdata as a fuzz seed.
func seedVectors(f *testing.F) {
	vf, err := vectors.Load(vectorsPath)
	if err != nil {
		f.Fatal(err)
	}
	for _, v := range vf.Vectors {
		f.Add(v.Bytes())
	}
}

// checkAccepted holds an accepted message to the strict decoder's promise:
// it is within its limit and re-encodes to exactly the input.
func checkAccepted(t *testing.T, in []byte, env protocol.Envelope, max int, payload func() ([]byte, error)) {
	t.Helper()
	if len(in) > max {
		t.Fatalf("accepted %d bytes, over the limit %d", len(in), max)
	}
	p, err := payload()
	if err != nil {
		t.Fatalf("accepted a message whose fields do not validate: %v", err)
	}
	if !bytes.Equal(p, env.Payload) {
		t.Fatalf("accepted a payload that does not re-encode to itself")
	}
	if !bytes.Equal(protocol.AppendEnvelope(nil, &env), in) {
		t.Fatalf("accepted a message that does not re-encode to itself")
	}
}

func FuzzDecodeTicket(f *testing.F) {
	seedVectors(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		env, tk, err := strict.DecodeTicket(in)
		if err != nil {
			if protocol.ReasonOf(err) == protocol.ReasonNone || !protocol.ReasonOf(err).Valid() {
				t.Fatalf("refusal without a valid reason: %v", err)
			}
			return
		}
		checkAccepted(t, in, env, protocol.MaxTicketSize, func() ([]byte, error) { return protocol.AppendTicketPayload(nil, &tk) })
	})
}

func FuzzDecodeReceipt(f *testing.F) {
	seedVectors(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		env, r, err := strict.DecodeReceipt(in)
		if err != nil {
			if !protocol.ReasonOf(err).Valid() {
				t.Fatalf("refusal without a valid reason: %v", err)
			}
			return
		}
		checkAccepted(t, in, env, protocol.MaxReceiptSize, func() ([]byte, error) { return protocol.AppendReceiptPayload(nil, &r) })
	})
}

func FuzzDecodeAggregate(f *testing.F) {
	seedVectors(f)
	signer, _ := protocol.NewEd25519Signer(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	var enc protocol.Encoder
	banded := protocol.Aggregate{Gateway: "gw-1", Seq: 3, Provider: "p", Account: "a", Meter: "m", WindowStart: 1, WindowEnd: 2,
		Quantity: 2150, Amount: 791_000_000, Currency: "EUR", Tickets: 3, MerkleRoot: make([]byte, 32), Epoch: 9,
		Bands: []protocol.AggregateBand{{Band: "free", Quantity: 100}, {Band: "minimum", Amount: 76_000_000},
			{Band: "tier 1", Quantity: 1000, Amount: 400_000_000}, {Band: "tier 2", Quantity: 1050, Amount: 315_000_000}}}
	b, err := enc.AppendAggregate(nil, &banded, signer)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		env, a, err := strict.DecodeAggregate(in)
		if err != nil {
			if !protocol.ReasonOf(err).Valid() {
				t.Fatalf("refusal without a valid reason: %v", err)
			}
			return
		}
		checkAccepted(t, in, env, protocol.MaxAggregateSize, func() ([]byte, error) { return protocol.AppendAggregatePayload(nil, &a) })
	})
}

func FuzzDecodeVoucher(f *testing.F) {
	seedVectors(f)
	signer, _ := protocol.NewEd25519Signer(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	var enc protocol.Encoder
	for _, v := range []protocol.Voucher{
		{ID: "V-0001", Account: "household", Amount: 10_000_000_000, Currency: "EUR", Expiry: 1_800_000_000_000},
		{ID: "kiosk.card-77", Account: "kiosk", Amount: 1, Currency: "JPY", Expiry: 1, Issuer: "stadtwerk"},
	} {
		b, err := enc.AppendVoucher(nil, &v, signer)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		env, v, err := strict.DecodeVoucher(in)
		if err != nil {
			if !protocol.ReasonOf(err).Valid() {
				t.Fatalf("refusal without a valid reason: %v", err)
			}
			return
		}
		checkAccepted(t, in, env, protocol.MaxVoucherSize, func() ([]byte, error) { return protocol.AppendVoucherPayload(nil, &v) })
		text := protocol.VoucherText(in)
		back, err := protocol.ParseVoucherText(text)
		if err != nil || string(back) != string(in) {
			t.Fatalf("text form does not round-trip: %q: %v", text, err)
		}
	})
}

func FuzzDecodeCredit(f *testing.F) {
	seedVectors(f)
	signer, _ := protocol.NewEd25519Signer(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	var enc protocol.Encoder
	b, err := enc.AppendCredit(nil, &protocol.Credit{Gateway: "gw-1", Seq: 7, Account: "kiosk", Amount: 20_000_000_000,
		Currency: "EUR", Time: 1_790_000_000_000, Kind: protocol.CreditVoucher, Ref: "V-0001", Epoch: 99}, signer)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		env, c, err := strict.DecodeCredit(in)
		if err != nil {
			if !protocol.ReasonOf(err).Valid() {
				t.Fatalf("refusal without a valid reason: %v", err)
			}
			return
		}
		checkAccepted(t, in, env, protocol.MaxAggregateSize, func() ([]byte, error) { return protocol.AppendCreditPayload(nil, &c) })
	})
}

func FuzzDecodeRestore(f *testing.F) {
	seedVectors(f)
	signer, _ := protocol.NewEd25519Signer(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	var enc protocol.Encoder
	b, err := enc.AppendRestore(nil, &protocol.Restore{Gateway: "gw-1", Seq: 1, OldEpoch: 99, OldLastSeq: 411,
		Time: 1_790_000_000_000, Epoch: 100}, signer)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		env, r, err := strict.DecodeRestore(in)
		if err != nil {
			if !protocol.ReasonOf(err).Valid() {
				t.Fatalf("refusal without a valid reason: %v", err)
			}
			return
		}
		if r.Epoch == 0 || r.Epoch == r.OldEpoch {
			t.Fatalf("accepted a restore into its own epoch: %+v", r)
		}
		checkAccepted(t, in, env, protocol.MaxAggregateSize, func() ([]byte, error) { return protocol.AppendRestorePayload(nil, &r) })
	})
}

func FuzzDecodeHold(f *testing.F) {
	seedVectors(f)
	signer, _ := protocol.NewEd25519Signer(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	var enc protocol.Encoder
	b, err := enc.AppendHold(nil, &protocol.Hold{Gateway: "gw-1", Seq: 8, Device: "meter-1", Ticket: 12, Account: "acme",
		Provider: "grid", Action: protocol.HoldReleased, Rule: protocol.ReasonRegisterJump,
		Usage: []protocol.HoldReading{{Meter: "energy_wh", Quantity: 100_000}}, Amount: 30_000_000_000, Currency: "EUR",
		Time: 1_790_000_000_000, Note: "fast charger", Epoch: 99}, signer)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		env, h, err := strict.DecodeHold(in)
		if err != nil {
			if !protocol.ReasonOf(err).Valid() {
				t.Fatalf("refusal without a valid reason: %v", err)
			}
			return
		}
		checkAccepted(t, in, env, protocol.MaxHoldSize, func() ([]byte, error) { return protocol.AppendHoldPayload(nil, &h) })
	})
}

// FuzzReceiptDecoders is differential: the firmware's canonical parser and
// the gateway's strict decoder accept exactly the same receipts, with the
// same fields.
func FuzzReceiptDecoders(f *testing.F) {
	seedVectors(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		senv, sr, serr := strict.DecodeReceipt(in)
		var denv protocol.Envelope
		var dr protocol.Receipt
		derr := protocol.ParseGrantReceipt(in, &denv, &dr)
		if (serr == nil) != (derr == nil) {
			t.Fatalf("decoders disagree on %x: strict %v, device %v", in, serr, derr)
		}
		if serr == nil && (sr != dr || !envEqual(senv, denv)) {
			t.Fatalf("decoders disagree on %x: strict %+v, device %+v", in, sr, dr)
		}
	})
}

// FuzzEnvelopeParsers is differential on the envelope alone: whatever the
// device's parser accepts, the strict decoder reads the same way.
func FuzzEnvelopeParsers(f *testing.F) {
	seedVectors(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		var denv protocol.Envelope
		if protocol.ParseEnvelope(in, &denv) != nil {
			return
		}
		if !bytes.Equal(protocol.AppendEnvelope(nil, &denv), in) {
			t.Fatalf("device parser accepted a non-canonical envelope %x", in)
		}
		m, err := strict.Decode(in)
		if err == nil && !envEqual(m.Envelope, denv) {
			t.Fatalf("envelopes differ: strict %+v, device %+v", m.Envelope, denv)
		}
	})
}

func FuzzDecode(f *testing.F) {
	seedVectors(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := strict.Decode(in)
		if err != nil {
			return
		}
		if (m.Ticket != nil) != (m.Kind == protocol.KindTicket) || (m.Receipt != nil) != (m.Kind == protocol.KindReceipt) ||
			(m.Aggregate != nil) != (m.Kind == protocol.KindAggregate) {
			t.Fatalf("Decode gave kind %v with fields %+v", m.Kind, m)
		}
		if _, err := strict.Diagnose(in); err != nil {
			t.Fatalf("accepted message is not well-formed CBOR: %v", err)
		}
	})
}

func envEqual(a, b protocol.Envelope) bool {
	return a.Alg == b.Alg && bytes.Equal(a.KeyID, b.KeyID) && bytes.Equal(a.Protected, b.Protected) &&
		bytes.Equal(a.Payload, b.Payload) && bytes.Equal(a.Signature, b.Signature)
}

// FuzzDecodeCommand: a command the decoder accepts is within its limit,
// valid, and re-encodes to exactly its bytes.
func FuzzDecodeCommand(f *testing.F) {
	seedVectors(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		env, c, err := strict.DecodeCommand(in)
		if err != nil {
			if !protocol.ReasonOf(err).Valid() {
				t.Fatalf("refusal without a valid reason: %v", err)
			}
			return
		}
		checkAccepted(t, in, env, protocol.MaxCommandSize, func() ([]byte, error) { return protocol.AppendCommandPayload(nil, &c) })
	})
}

// FuzzDecodeCommandAck: likewise for a gateway's acknowledgement.
func FuzzDecodeCommandAck(f *testing.F) {
	seedVectors(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		env, a, err := strict.DecodeCommandAck(in)
		if err != nil {
			if !protocol.ReasonOf(err).Valid() {
				t.Fatalf("refusal without a valid reason: %v", err)
			}
			return
		}
		checkAccepted(t, in, env, protocol.MaxAggregateSize, func() ([]byte, error) { return protocol.AppendCommandAckPayload(nil, &a) })
	})
}
