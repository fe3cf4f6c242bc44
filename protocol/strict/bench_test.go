package strict_test

import (
	"fmt"
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

// BenchmarkPaywordVerify measures what checking a payword ticket costs the
// gateway, by the steps it moves the chain (1: one unit per ticket; up
// to MaxPaywordSteps): parse, then hash down to the last accepted
// payword and compare. Compare with BenchmarkDecodeVerify's one-reading
// HMAC and Ed25519 tickets in the same run.
func BenchmarkPaywordVerify(b *testing.B) {
	chain := protocol.ChainID{1, 2, 3, 4, 5, 6, 7, 8}
	w := protocol.Payword{42}
	for _, steps := range []uint64{1, 16, 256, protocol.MaxPaywordSteps} {
		last := protocol.PaywordWalk(&chain, w, steps)
		msg, err := protocol.AppendPaywordTicket(nil, &protocol.PaywordTicket{Device: "plug-0001", Chain: chain, Index: 4000, Word: w})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("steps=%d", steps), func(b *testing.B) {
			b.ReportAllocs()
			var p protocol.PaywordTicket
			for b.Loop() {
				if err := protocol.ParsePaywordTicket(msg, &p); err != nil {
					b.Fatal(err)
				}
				if protocol.PaywordWalk(&p.Chain, p.Word, steps) != last {
					b.Fatal("mismatch")
				}
			}
		})
	}
	b.Run("sizes", func(b *testing.B) {
		ed, mac := testKeys(b)
		tk := protocol.Ticket{Device: "plug-0001", Seq: 42, Time: 1_790_000_000_000, Readings: []protocol.Reading{{Meter: "energy_wh", Register: 123456}}}
		var enc protocol.Encoder
		hm, _ := enc.AppendTicket(nil, &tk, mac)
		es, _ := enc.AppendTicket(nil, &tk, ed)
		pw, _ := protocol.AppendPaywordTicket(nil, &protocol.PaywordTicket{Device: "plug-0001", Index: 4000})
		for b.Loop() {
		}
		b.ReportMetric(float64(len(pw)), "payword-bytes")
		b.ReportMetric(float64(len(hm)), "hmac-bytes")
		b.ReportMetric(float64(len(es)), "ed25519-bytes")
	})
}
