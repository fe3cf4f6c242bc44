package metering_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/metering"
)

// FuzzParseMoney: whatever parses prints back to a string that parses to
// the same amount, and nothing panics.
func FuzzParseMoney(f *testing.F) {
	for _, s := range []string{"0.000012 EUR", "-1.5 USD", "9223372036.854775807 EUR", "-9223372036.854775808 EUR", "1e3 EUR", ".5 EUR", "0.1234567891 EUR", "+3 JPY"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := metering.ParseMoney(s)
		if err != nil {
			if !errors.Is(err, metering.ErrBadMoney) && !errors.Is(err, metering.ErrOverflow) {
				t.Fatalf("ParseMoney(%q) error without a sentinel: %v", s, err)
			}
			return
		}
		back, err := metering.ParseMoney(m.String())
		if err != nil || back != m {
			t.Fatalf("ParseMoney(%q) = %v; printed %q parses to %v, %v", s, m, m.String(), back, err)
		}
	})
}

// FuzzExactCharging is the exactness property under fuzzed prices and
// splits: charging a quantity in two parts (at any times, across a
// time-of-use edge or not) charges each band exactly floor(Q_band·price).
func FuzzExactCharging(f *testing.F) {
	f.Add(uint64(300_000_000), uint64(1000), uint64(1234), uint64(77), int64(0), int64(3_600_000), uint64(50))
	f.Add(uint64(1), uint64(3), uint64(2), uint64(1), int64(5), int64(5), uint64(0))
	f.Add(uint64(100_000_000), uint64(1_000_000_000), uint64(1<<40), uint64(1<<41), int64(-7), int64(1<<40), uint64(1<<20))
	berlin, _ := time.LoadLocation("Europe/Berlin")
	f.Fuzz(func(t *testing.T, nanos, per, q1, q2 uint64, t1, t2 int64, tierUp uint64) {
		if per == 0 || tierUp == 0 {
			return
		}
		tr := &metering.Tariff{ID: "f", Currency: "EUR", Location: berlin, Period: metering.PeriodNone,
			Tiers:   []metering.Tier{{UpTo: tierUp, Price: metering.Price{Nanos: nanos, Per: per}}, {Price: metering.Price{Nanos: nanos / 2, Per: per}}},
			Windows: []metering.TimeOfUse{{Name: "pk", Weekdays: 0b0111110, From: 17 * 60, To: 21 * 60, Price: metering.Price{Nanos: nanos / 3, Per: per}}}}
		if err := tr.Validate(); err != nil {
			t.Fatal(err)
		}
		base := int64(1_790_000_000_000)
		t1, t2 = base+t1%(40*86_400_000), base+t2%(40*86_400_000)
		if t1 > t2 {
			t1, t2 = t2, t1
		}
		var st metering.ChargeState
		var bands [metering.MaxBands]metering.BandCharge
		var total metering.Nanos
		for _, u := range []metering.Usage{{From: base - 60_000, To: t1, Quantity: q1}, {From: t1, To: t2, Quantity: q2}} {
			ch, next, err := tr.Price(st, u)
			if errors.Is(err, metering.ErrOverflow) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st = next
			if ch.Quantity != ch.Free+sumQ(ch.Bands) {
				t.Fatalf("charge splits %d units into %d free + %d in bands", ch.Quantity, ch.Free, sumQ(ch.Bands))
			}
			for b := range bands {
				bands[b].Quantity += ch.Bands[b].Quantity
				bands[b].Amount += ch.Bands[b].Amount
			}
			total += ch.Amount
		}
		var want metering.Nanos
		for b, bc := range bands {
			if bc.Quantity == 0 {
				continue
			}
			c, err := tr.BandPrice(b).Cost(bc.Quantity)
			if err != nil {
				return
			}
			if c != bc.Amount {
				t.Fatalf("band %d: %d units charged %d in parts; the whole costs %d", b, bc.Quantity, bc.Amount, c)
			}
			want += c
		}
		if total != want {
			t.Fatalf("total %d; bands cost %d", total, want)
		}
	})
}

func sumQ(b [metering.MaxBands]metering.BandCharge) uint64 {
	var s uint64
	for _, x := range b {
		s += x.Quantity
	}
	return s
}

// FuzzStateDecode: stored-state decoders never panic, and whatever they
// accept re-encodes to the same bytes.
func FuzzStateDecode(f *testing.F) {
	for _, tc := range sampleStates(f) {
		b, _ := tc.v.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for name, tc := range sampleStates(t) {
			v := tc.new()
			if v.UnmarshalBinary(b) != nil {
				continue
			}
			again, err := v.(interface{ MarshalBinary() ([]byte, error) }).MarshalBinary()
			if err != nil || string(again) != string(b) {
				t.Fatalf("%s: accepted %x, re-encodes to %x", name, b, again)
			}
		}
	})
}

// FuzzSplit: a split always sums to the amount and never goes negative.
func FuzzSplit(f *testing.F) {
	f.Add(int64(100), uint64(1), uint64(1), uint64(1))
	f.Add(int64(math.MaxInt64), uint64(math.MaxUint64/3), uint64(7), uint64(0))
	f.Fuzz(func(t *testing.T, amount int64, a, b, c uint64) {
		parts, err := metering.Split(metering.Nanos(amount), []uint64{a, b, c})
		if err != nil {
			return
		}
		var sum metering.Nanos
		for _, p := range parts {
			if p < 0 {
				t.Fatalf("negative part %v", parts)
			}
			sum += p
		}
		if sum != metering.Nanos(amount) {
			t.Fatalf("Split(%d, %d:%d:%d) = %v sums to %d", amount, a, b, c, parts, sum)
		}
	})
}
