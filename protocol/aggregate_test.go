package protocol_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

func bandedAggregate() protocol.Aggregate {
	return protocol.Aggregate{Gateway: "gw-1", Seq: 3, Provider: "p", Account: "a", Meter: "m", WindowStart: 1, WindowEnd: 2,
		Quantity: 2150, Amount: 791_000_000, Currency: "EUR", Tickets: 3, MerkleRoot: make([]byte, 32), Epoch: 9,
		Bands: []protocol.AggregateBand{{Band: "free", Quantity: 100}, {Band: "minimum", Amount: 76_000_000},
			{Band: "tier 1", Quantity: 1000, Amount: 400_000_000}, {Band: "tier 2", Quantity: 1050, Amount: 315_000_000}},
		Proven: 1200}
}

// Price bands travel as key 15 and survive the strict decoder.
func TestAggregateBandsRoundTrip(t *testing.T) {
	s, _ := testEd25519(t)
	a := bandedAggregate()
	var enc protocol.Encoder
	b, err := enc.AppendAggregate(nil, &a, s)
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := strict.DecodeAggregate(b)
	if err != nil || len(got.Bands) != len(a.Bands) || got.Proven != a.Proven {
		t.Fatalf("decoded %+v (proven %d), %v", got.Bands, got.Proven, err)
	}
	a.Proven = a.Quantity + 1
	if _, err := enc.AppendAggregate(nil, &a, s); err == nil {
		t.Error("an aggregate proving more than its quantity was made")
	}
	for i := range a.Bands {
		if got.Bands[i] != a.Bands[i] {
			t.Errorf("band %d: %+v, want %+v", i, got.Bands[i], a.Bands[i])
		}
	}
}

// The largest aggregate the rules allow fits MaxAggregateSize.
func TestLargestAggregateFits(t *testing.T) {
	s, _ := testEd25519(t)
	long := func(n int) string { return strings.Repeat("x", n) }
	a := protocol.Aggregate{Gateway: long(protocol.MaxDeviceIDLen), Seq: protocol.MaxSeq, Provider: long(protocol.MaxDeviceIDLen),
		Account: long(protocol.MaxAccountLen), Meter: long(protocol.MaxMeterNameLen), WindowStart: math.MaxUint64 - 1,
		WindowEnd: math.MaxUint64, Currency: long(protocol.MaxCurrencyLen), Tickets: math.MaxUint64,
		MerkleRoot: make([]byte, 32), Corrects: protocol.MaxSeq - 1, Epoch: math.MaxUint64}
	for i := range protocol.MaxAggregateBands {
		name := long(protocol.MaxBandNameLen-1) + string(rune('a'+i))
		a.Bands = append(a.Bands, protocol.AggregateBand{Band: name, Quantity: math.MaxUint64 / 16, Amount: math.MaxUint64 / 16})
		a.Quantity += math.MaxUint64 / 16
		a.Amount += math.MaxUint64 / 16
	}
	a.Proven = a.Quantity
	var enc protocol.Encoder
	b, err := enc.AppendAggregate(nil, &a, s)
	if err != nil {
		t.Fatalf("the largest aggregate: %v", err)
	}
	if _, _, err := strict.DecodeAggregate(b); err != nil {
		t.Fatalf("the largest aggregate (%d bytes) does not decode: %v", len(b), err)
	}
	t.Logf("the largest aggregate is %d bytes of %d", len(b), protocol.MaxAggregateSize)
}

// Bands that do not describe the aggregate are refused when it is made.
func TestAggregateBandRules(t *testing.T) {
	for name, change := range map[string]func(a *protocol.Aggregate){
		"unsorted":        func(a *protocol.Aggregate) { a.Bands[0], a.Bands[1] = a.Bands[1], a.Bands[0] },
		"twice":           func(a *protocol.Aggregate) { a.Bands[1].Band = a.Bands[0].Band },
		"amount off":      func(a *protocol.Aggregate) { a.Bands[2].Amount++ },
		"quantity off":    func(a *protocol.Aggregate) { a.Bands[3].Quantity-- },
		"empty name":      func(a *protocol.Aggregate) { a.Bands[0].Band = "" },
		"control in name": func(a *protocol.Aggregate) { a.Bands[3].Band = "tier\n2" },
		"long name":       func(a *protocol.Aggregate) { a.Bands[3].Band = "tier " + strings.Repeat("9", protocol.MaxBandNameLen) },
		"too many": func(a *protocol.Aggregate) {
			a.Bands = nil
			a.Quantity, a.Amount = 0, 0
			for i := range protocol.MaxAggregateBands + 1 {
				a.Bands = append(a.Bands, protocol.AggregateBand{Band: "b" + string(rune('a'+i)), Quantity: 1, Amount: 1})
				a.Quantity++
				a.Amount++
			}
		},
	} {
		a := bandedAggregate()
		change(&a)
		var pe *protocol.Error
		if err := a.Validate(); !errors.As(err, &pe) {
			t.Errorf("%s: %v; want a refusal", name, err)
		}
	}
	a := bandedAggregate()
	if err := a.Validate(); err != nil {
		t.Fatalf("the banded aggregate: %v", err)
	}
}
