package provider_test

import (
	"testing"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// TestChainProgressProvenOrHeld: a chain progress record whose paywords
// prove its usage is booked into the payword totals; one that claims
// more than its paywords prove (signed by the trusted gateway all the
// same) is held with its reason, counted, its seq booked (no gap), its
// usage counted nowhere — in the file and in PostgreSQL.
func TestChainProgressProvenOrHeld(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		g := newGW(t)
		r, err := open(provider.Keys(g.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		mac, _ := protocol.NewHMAC(make([]byte, 32))
		id, seed := protocol.ChainID{4}, protocol.Payword{5}
		const n = 1000
		c := protocol.Commitment{Device: "d-1", Chain: id, Number: 1, Meter: "water_ml", Units: 2, Length: n,
			Anchor: protocol.PaywordWalk(&id, seed, n), Expiry: 1}
		var enc protocol.Encoder
		cb, _ := enc.AppendCommitment(nil, &c, mac)
		w := func(i uint32) protocol.Payword { return protocol.PaywordWalk(&id, seed, uint64(n-i)) }
		progress := func(seq uint64, from, to uint32, toWord protocol.Payword) []byte {
			p := protocol.ChainProgress{Gateway: "gw-1", Seq: seq, Provider: "water", Account: "flat-3", Commitment: cb,
				From: from, FromWord: w(from), To: to, ToWord: toWord, Epoch: 7}
			b, err := enc.AppendChainProgress(nil, &p, g.s)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		mustBook(t, r, progress(1, 0, 100, w(100)), provider.Accepted)
		mustBook(t, r, progress(2, 100, 250, w(250)), provider.Accepted)
		bk := mustBook(t, r, progress(3, 250, 400, w(300)), provider.PaywordUnproven) // claims 400 with payword 300
		if bk.Payword == nil || bk.Payword.Device != "d-1" {
			t.Fatalf("booking of the unproven record: %+v", bk)
		}
		mustBook(t, r, progress(2, 100, 250, w(250)), provider.Duplicate)
		rep, err := r.Report()
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Paywords) != 1 || rep.Paywords[0].Quantity != 500 || rep.Paywords[0].Records != 2 || rep.Paywords[0].Meter != "water_ml" {
			t.Fatalf("payword totals %+v; want 500 ml over 2 records", rep.Paywords)
		}
		if rep.Stats.UnprovenPaywords != 1 || rep.Stats.Paywords != 2 || len(rep.Held) != 1 || rep.Held[0].Reason != "payword_unproven" ||
			rep.Held[0].Account != "flat-3" {
			t.Fatalf("stats %+v, held %+v", rep.Stats, rep.Held)
		}
		for s, gaps := range rep.Gaps {
			if len(gaps) != 0 {
				t.Fatalf("stream %s: gaps %v (the unproven record's seq is booked)", s, gaps)
			}
		}
	})
}
