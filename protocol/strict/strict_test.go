package strict_test

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

func testKeys(t testing.TB) (*protocol.Ed25519Signer, *protocol.HMAC) {
	seed := make([]byte, 32)
	key := make([]byte, 32)
	for i := range seed {
		seed[i], key[i] = byte(i), byte(0x20+i)
	}
	ed, err := protocol.NewEd25519Signer(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	mac, err := protocol.NewHMAC(key)
	if err != nil {
		t.Fatal(err)
	}
	return ed, mac
}

func edPublic(t testing.TB) ed25519.PublicKey {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	return ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
}

// cb builds CBOR by hand, including encodings the encoder never makes.
type cb []byte

func (b cb) head(major byte, n uint64) cb {
	switch {
	case n < 24:
		return append(b, major<<5|byte(n))
	case n < 256:
		return append(b, major<<5|24, byte(n))
	case n < 65536:
		return append(b, major<<5|25, byte(n>>8), byte(n))
	default:
		b = append(b, major<<5|27)
		for i := 56; i >= 0; i -= 8 {
			b = append(b, byte(n>>i))
		}
		return b
	}
}
func (b cb) u(n uint64) cb                 { return b.head(0, n) }
func (b cb) t(s string) cb                 { return append(b.head(3, uint64(len(s))), s...) }
func (b cb) bs(p []byte) cb                { return append(b.head(2, uint64(len(p))), p...) }
func (b cb) arr(n int) cb                  { return b.head(4, uint64(n)) }
func (b cb) m(n int) cb                    { return b.head(5, uint64(n)) }
func (b cb) raw(p ...byte) cb              { return append(b, p...) }
func (b cb) reading(m string, v uint64) cb { return b.arr(2).t(m).u(v) }

// ticketPayload is a valid ticket payload with the given extra tail
// entries; n counts them.
func ticketPayload(extra int, tail cb) cb {
	b := cb{}.m(5+extra).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(1).reading("e_wh", 10)
	return append(b, tail...)
}

// seal signs payload as a COSE message with s, exactly as the encoder
// would wrap it.
func seal(s protocol.Signer, payload []byte) []byte {
	prot := protocol.AppendProtected(nil, s.Algorithm(), s.KeyID())
	sig, _ := s.Sign(nil, protocol.AppendToBeSigned(nil, s.Algorithm(), prot, payload))
	return protocol.AppendEnvelope(nil, &protocol.Envelope{Alg: s.Algorithm(), KeyID: s.KeyID(), Protected: prot, Payload: payload, Signature: sig})
}

// envelope wraps explicit parts, for malformed envelopes.
func envelope(tag uint64, prot, unprot, payload, sig []byte) []byte {
	b := cb{}.head(6, tag).arr(4).bs(prot)
	b = append(b, unprot...)
	return b.bs(payload).bs(sig)
}

func TestDecodeTicketRefusals(t *testing.T) {
	ed, mac := testKeys(t)
	valid := seal(mac, ticketPayload(0, nil))
	edProt := protocol.AppendProtected(nil, protocol.AlgEdDSA, ed.KeyID())
	macProt := protocol.AppendProtected(nil, protocol.AlgHMAC256, mac.KeyID())
	sig64, sig32 := make([]byte, 64), make([]byte, 32)
	for _, tc := range []struct {
		name string
		in   []byte
		want protocol.Reason
	}{
		{"valid hmac", valid, protocol.ReasonNone},
		{"valid ed25519", seal(ed, ticketPayload(0, nil)), protocol.ReasonNone},
		{"empty", nil, protocol.ReasonMalformed},
		{"too large", append(bytes.Clone(valid), make([]byte, protocol.MaxTicketSize)...), protocol.ReasonTooLarge},
		{"untagged", valid[1:], protocol.ReasonUnexpectedTag},
		{"other tag", append(cb{}.head(6, 98), valid[1:]...), protocol.ReasonUnexpectedTag},
		{"trailing byte", append(bytes.Clone(valid), 0), protocol.ReasonMalformed},
		{"truncated", valid[:len(valid)-1], protocol.ReasonMalformed},
		{"not cbor", []byte{0xd1, 0xff, 0xff}, protocol.ReasonMalformed},
		{"array of 3", cb{}.head(6, 17).arr(3).bs(macProt).m(0).bs(ticketPayload(0, nil)), protocol.ReasonMalformed},
		{"null payload", append(cb{}.head(6, 17).arr(4).bs(macProt).m(0), append([]byte{0xf6}, cb{}.bs(sig32)...)...), protocol.ReasonMalformed},
		{"hmac alg in sign1", envelope(18, macProt, cb{}.m(0), ticketPayload(0, nil), sig32), protocol.ReasonUnsupportedAlg},
		{"eddsa alg in mac0", envelope(17, edProt, cb{}.m(0), ticketPayload(0, nil), sig64), protocol.ReasonUnsupportedAlg},
		{"es256 alg", envelope(18, cb{}.m(2).u(1).raw(0x26).u(4).bs([]byte("k")), cb{}.m(0), ticketPayload(0, nil), sig64), protocol.ReasonUnsupportedAlg},
		{"no kid", envelope(17, cb{}.m(1).u(1).u(5), cb{}.m(0), ticketPayload(0, nil), sig32), protocol.ReasonBadHeader},
		{"extra protected label", envelope(17, cb{}.m(3).u(1).u(5).u(3).u(0).u(4).bs([]byte("k")), cb{}.m(0), ticketPayload(0, nil), sig32), protocol.ReasonBadHeader},
		{"unprotected kid", envelope(17, macProt, cb{}.m(1).u(4).bs([]byte("k")), ticketPayload(0, nil), sig32), protocol.ReasonBadHeader},
		{"short signature", envelope(17, macProt, cb{}.m(0), ticketPayload(0, nil), sig32[:31]), protocol.ReasonBadSignature},
		{"long kid", envelope(17, cb{}.m(2).u(1).u(5).u(4).bs(make([]byte, 17)), cb{}.m(0), ticketPayload(0, nil), sig32), protocol.ReasonStringTooLong},
		{"unsorted protected header", envelope(17, cb{}.m(2).u(4).bs(mac.KeyID()).u(1).u(5), cb{}.m(0), ticketPayload(0, nil), sig32), protocol.ReasonNonCanonical},
		{"long-form payload length", append(cb{}.head(6, 17).arr(4).bs(macProt).m(0).raw(0x59, 0, byte(len(ticketPayload(0, nil)))), append(ticketPayload(0, nil), cb{}.bs(sig32)...)...), protocol.ReasonNonCanonical},

		{"unknown key", seal(mac, ticketPayload(1, cb{}.u(9).u(1))), protocol.ReasonUnknownField},
		{"duplicate key", seal(mac, ticketPayload(1, cb{}.u(3).u(5))), protocol.ReasonNonCanonical},
		{"unsorted keys", seal(mac, cb{}.m(5).u(0).u(1).u(2).u(7).u(1).t("dev-1").u(3).u(1_790_000_000_000).u(5).arr(1).reading("e_wh", 10)), protocol.ReasonNonCanonical},
		{"non-shortest seq", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).raw(0x18, 7).u(3).u(1_790_000_000_000).u(5).arr(1).reading("e_wh", 10)), protocol.ReasonNonCanonical},
		{"epoch written as 0", seal(mac, cb{}.m(6).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(4).u(0).u(5).arr(1).reading("e_wh", 10)), protocol.ReasonNonCanonical},
		{"indefinite readings", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).raw(0x9f).reading("e_wh", 10).raw(0xff)), protocol.ReasonNonCanonical},
		{"tagged time", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).head(6, 1).u(1_790_000_000).u(5).arr(1).reading("e_wh", 10)), protocol.ReasonUnexpectedTag},
		{"float register", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(1).arr(2).t("e").raw(0xf9, 0x3c, 0)), protocol.ReasonMalformed},
		{"negative seq", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).raw(0x20).u(3).u(1_790_000_000_000).u(5).arr(1).reading("e_wh", 10)), protocol.ReasonMalformed},
		{"readings as map", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).m(1).t("e").u(1)), protocol.ReasonMalformed},
		{"reading of 3", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(1).arr(3).t("e").u(1).u(2)), protocol.ReasonMalformed},
		{"no readings", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(0)), protocol.ReasonTooManyReadings},
		{"17 readings", seal(mac, func() cb {
			b := cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(17)
			for i := 0; i < 17; i++ {
				b = b.reading(string(rune('a'+i)), 1)
			}
			return b
		}()), protocol.ReasonTooManyReadings},
		{"duplicate meter", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(2).reading("e", 1).reading("e", 2)), protocol.ReasonDuplicateMeter},
		{"meter with slash", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(1).reading("a/b", 1)), protocol.ReasonBadName},
		{"device id too long", seal(mac, cb{}.m(5).u(0).u(1).u(1).t(strings.Repeat("d", 65)).u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(1).reading("e", 1)), protocol.ReasonStringTooLong},
		{"invalid utf-8", seal(mac, cb{}.m(5).u(0).u(1).u(1).raw(0x62, 0xc3, 0x28).u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(1).reading("e", 1)), protocol.ReasonMalformed},
		{"seq 0", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(0).u(3).u(1_790_000_000_000).u(5).arr(1).reading("e", 1)), protocol.ReasonFieldRange},
		{"no time", seal(mac, cb{}.m(4).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(5).arr(1).reading("e", 1)), protocol.ReasonMissingField},
		{"no kind", seal(mac, cb{}.m(4).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(1).reading("e", 1)), protocol.ReasonMissingField},
		{"receipt kind", seal(mac, cb{}.m(5).u(0).u(2).u(1).t("dev-1").u(2).u(7).u(3).u(0).u(5).u(0)), protocol.ReasonWrongKind},
		{"payload not a map", seal(mac, cb{}.arr(0)), protocol.ReasonMalformed},
		{"deep nesting", seal(mac, cb{}.m(5).u(0).u(1).u(1).t("dev-1").u(2).u(7).u(3).u(1_790_000_000_000).u(5).arr(1).arr(2).arr(1).arr(1).arr(1).arr(0).u(1)), protocol.ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := strict.DecodeTicket(tc.in)
			if got := protocol.ReasonOf(err); got != tc.want {
				t.Errorf("DecodeTicket reason = %v (%v); want %v", got, err, tc.want)
			}
		})
	}
}

func TestDecodeDispatchesOnKind(t *testing.T) {
	ed, mac := testKeys(t)
	var enc protocol.Encoder
	tk := protocol.Ticket{Device: "d", Seq: 1, Time: 1, Readings: []protocol.Reading{{Meter: "m", Register: 1}}}
	rc := protocol.Receipt{Device: "d", Seq: 1, Status: protocol.StatusAccepted}
	ag := protocol.Aggregate{Gateway: "g", Seq: 1, Provider: "p", Account: "a", Meter: "m", WindowStart: 1, WindowEnd: 2, Currency: "EUR", MerkleRoot: make([]byte, 32)}
	tb, _ := enc.AppendTicket(nil, &tk, mac)
	rb, _ := enc.AppendReceipt(nil, &rc, mac)
	ab, _ := enc.AppendAggregate(nil, &ag, ed)
	for _, tc := range []struct {
		in   []byte
		want protocol.Kind
	}{{tb, protocol.KindTicket}, {rb, protocol.KindReceipt}, {ab, protocol.KindAggregate}} {
		m, err := strict.Decode(tc.in)
		if err != nil || m.Kind != tc.want {
			t.Errorf("Decode = %+v, %v; want kind %v", m, err, tc.want)
		}
	}
	if _, _, err := strict.DecodeReceipt(tb); protocol.ReasonOf(err) != protocol.ReasonWrongKind {
		t.Errorf("DecodeReceipt(ticket) = %v; want wrong_kind", err)
	}
	if _, _, err := strict.DecodeAggregate(rb); protocol.ReasonOf(err) == protocol.ReasonNone {
		t.Errorf("DecodeAggregate(receipt) accepted it")
	}
	if _, err := enc.AppendAggregate(nil, &ag, mac); protocol.ReasonOf(err) != protocol.ReasonUnsupportedAlg {
		t.Errorf("AppendAggregate with an HMAC key = %v; want unsupported_alg", err)
	}
}

// TestKindIsNotTruncated: a kind of 258 is not a receipt (2) on either side.
func TestKindIsNotTruncated(t *testing.T) {
	_, mac := testKeys(t)
	in := seal(mac, cb{}.m(5).u(0).u(258).u(1).t("plug-1").u(2).u(1).u(3).u(0).u(5).u(0))
	if _, _, err := strict.DecodeReceipt(in); err == nil {
		t.Errorf("strict.DecodeReceipt accepted kind 258")
	}
	var env protocol.Envelope
	var r protocol.Receipt
	if err := protocol.ParseReceipt(in, &env, &r); err == nil {
		t.Errorf("protocol.ParseReceipt accepted kind 258")
	}
}
