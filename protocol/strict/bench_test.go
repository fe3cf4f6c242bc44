package strict_test

import (
	"testing"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// BenchmarkDecodeVerify measures the gateway's per-ticket front end: strict
// decode of a three-reading ticket, then signature verification.
func BenchmarkDecodeVerify(b *testing.B) {
	ed, mac := testKeys(b)
	edv, _ := protocol.NewEd25519Verifier(edPublic(b))
	tk := protocol.Ticket{Device: "plug-0001", Seq: 42, Time: 1_790_000_000_000, Readings: []protocol.Reading{
		{Meter: "energy_wh", Register: 123456}, {Meter: "on_ms", Register: 9_000_000}, {Meter: "relay_ops", Register: 17}}}
	for _, bc := range []struct {
		name string
		s    protocol.Signer
		v    protocol.Verifier
	}{{"HMAC", mac, mac}, {"Ed25519", ed, edv}} {
		var enc protocol.Encoder
		msg, err := enc.AppendTicket(nil, &tk, bc.s)
		if err != nil {
			b.Fatal(err)
		}
		scratch := make([]byte, 0, protocol.MaxMessageSize+64)
		b.Run(bc.name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := strict.DecodeTicket(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/decode+verify", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				env, _, err := strict.DecodeTicket(msg)
				if err != nil {
					b.Fatal(err)
				}
				if err := env.Verify(bc.v, scratch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
