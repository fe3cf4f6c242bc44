package provider_test

import (
	"context"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// A statement sums, per account, provider and meter, the aggregates whose
// window starts in the period — corrections included, other periods and
// accounts out — in nanos and exactly in minor units.
func TestStatement(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		g := newGW(t)
		rc, err := open(provider.Keys(g.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		nov := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
		dec := nov.AddDate(0, 1, 0)
		seq := uint64(0)
		book := func(account, meter string, start time.Time, qty, amount, corrects uint64) {
			t.Helper()
			seq++
			a := protocol.Aggregate{Gateway: "gw-a", Seq: seq, Epoch: 1, Provider: "stadtwerk", Account: account, Meter: meter,
				WindowStart: uint64(start.UnixMilli()), WindowEnd: uint64(start.Add(time.Minute).UnixMilli()), Quantity: qty,
				Amount: amount, Currency: "EUR", Tickets: 2, MerkleRoot: make([]byte, 32), Corrects: corrects}
			var enc protocol.Encoder
			b, err := enc.AppendAggregate(nil, &a, g.s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rc.Accept(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
		book("acct-1", "kwh", nov.Add(time.Hour), 1000, 123_456_789, 0)
		book("acct-1", "kwh", dec.Add(-time.Millisecond), 500, 1, 0) // the period's last millisecond
		book("acct-1", "kwh", nov.Add(time.Hour), 10, 5_000_000, 1)  // a late correction of the first
		book("acct-1", "water", nov.Add(2*time.Hour), 3, 30_000_000, 0)
		book("acct-2", "kwh", nov.Add(3*time.Hour), 7, 70_000_000, 0)
		book("acct-1", "kwh", dec, 99, 99_000_000, 0)                        // December
		book("acct-1", "kwh", nov.Add(-time.Millisecond), 99, 99_000_000, 0) // October

		lines, err := rc.Statement("", nov, dec)
		if err != nil {
			t.Fatal(err)
		}
		want := []provider.StatementLine{
			{Account: "acct-1", Provider: "stadtwerk", Meter: "kwh", Band: "unsplit", Currency: "EUR", Quantity: 1510, Amount: 128_456_790,
				Minor: "12.845679", Tickets: 6, Aggregates: 3, Corrections: 1},
			{Account: "acct-1", Provider: "stadtwerk", Meter: "water", Band: "unsplit", Currency: "EUR", Quantity: 3, Amount: 30_000_000,
				Minor: "3", Tickets: 2, Aggregates: 1},
			{Account: "acct-2", Provider: "stadtwerk", Meter: "kwh", Band: "unsplit", Currency: "EUR", Quantity: 7, Amount: 70_000_000,
				Minor: "7", Tickets: 2, Aggregates: 1},
		}
		if len(lines) != len(want) {
			t.Fatalf("statement: %+v", lines)
		}
		for i := range want {
			if lines[i] != want[i] {
				t.Errorf("line %d: %+v, want %+v", i, lines[i], want[i])
			}
		}
		if only, _ := rc.Statement("acct-2", nov, dec); len(only) != 1 || only[0] != want[2] {
			t.Errorf("acct-2's statement: %+v", only)
		}

		// An aggregate that lists its price bands gives a line per band.
		seq++
		a := protocol.Aggregate{Gateway: "gw-a", Seq: seq, Epoch: 1, Provider: "stadtwerk", Account: "acct-3", Meter: "kwh",
			WindowStart: uint64(nov.UnixMilli()), WindowEnd: uint64(nov.UnixMilli()) + 1, Quantity: 2150, Amount: 791_000_000,
			Currency: "EUR", Tickets: 3, MerkleRoot: make([]byte, 32),
			Bands: []protocol.AggregateBand{{Band: "free", Quantity: 100}, {Band: "minimum", Amount: 76_000_000},
				{Band: "tier 1", Quantity: 1000, Amount: 400_000_000}, {Band: "tier 2", Quantity: 1050, Amount: 315_000_000}}}
		var enc protocol.Encoder
		b, err := enc.AppendAggregate(nil, &a, g.s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rc.Accept(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		banded, err := rc.Statement("acct-3", nov, dec)
		if err != nil || len(banded) != 4 {
			t.Fatalf("acct-3's statement: %+v, %v", banded, err)
		}
		for i, want := range []struct {
			band  string
			minor string
		}{{"free", "0"}, {"minimum", "7.6"}, {"tier 1", "40"}, {"tier 2", "31.5"}} {
			if banded[i].Band != want.band || banded[i].Minor != want.minor || banded[i].Quantity != a.Bands[i].Quantity {
				t.Errorf("line %d: %+v, want band %s, %s cents", i, banded[i], want.band, want.minor)
			}
		}
	})
}
