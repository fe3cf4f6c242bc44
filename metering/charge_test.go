package metering_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
	_ "time/tzdata"

	"github.com/farthing-iot/farthing/metering"
)

func mustLoc(t testing.TB, name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustValid(t testing.TB, tr *metering.Tariff) *metering.Tariff {
	t.Helper()
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	return tr
}

// per is a price of n nanos per `per` units.
func per(n, per uint64) metering.Price { return metering.Price{Nanos: n, Per: per} }

// randomTariff makes a tariff with 1..4 tiers and awkward prices.
func randomTariff(t testing.TB, r *rand.Rand) *metering.Tariff {
	tr := &metering.Tariff{ID: "rand", Currency: "EUR", Location: time.UTC, Free: r.Uint64N(3) * r.Uint64N(1000)}
	n := 1 + r.IntN(4)
	up := uint64(0)
	for i := 0; i < n; i++ {
		p := metering.Price{Nanos: r.Uint64N(10_000_000_000), Per: 1 + r.Uint64N(1_000_000_007)}
		if i == n-1 {
			tr.Tiers = append(tr.Tiers, metering.Tier{Price: p})
			break
		}
		up += 1 + r.Uint64N(50_000)
		tr.Tiers = append(tr.Tiers, metering.Tier{UpTo: up, Price: p})
	}
	return mustValid(t, tr)
}

// TestChargesSumToPriceOfTotal is the exactness property: however a total
// quantity is split into tickets, the per-ticket charges add up to exactly
// the price of the total, to the nano.
func TestChargesSumToPriceOfTotal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 2000; trial++ {
		tr := randomTariff(t, r)
		var st metering.ChargeState
		var sum metering.Nanos
		var total uint64
		now := int64(1_790_000_000_000)
		for n := r.IntN(200); n >= 0; n-- {
			q := r.Uint64N(1 + r.Uint64N(100_000))
			ch, next, err := tr.Price(st, metering.Usage{From: now, To: now + 1000, Quantity: q})
			if err != nil {
				t.Fatal(err)
			}
			st, now, total = next, now+1000, total+q
			if sum, err = sum.Add(ch.Amount); err != nil {
				t.Fatal(err)
			}
		}
		once, _, err := tr.Price(metering.ChargeState{}, metering.Usage{From: 0, To: 1, Quantity: total})
		if err != nil {
			t.Fatal(err)
		}
		if sum != once.Amount {
			t.Fatalf("trial %d: tickets sum to %d nanos, the total of %d units prices at %d (tariff %+v)", trial, sum, total, once.Amount, tr.Tiers)
		}
		// And the one-shot price is the documented floor per tier.
		var want metering.Nanos
		rest, used := total, uint64(0)
		if f := min(rest, tr.Free); f > 0 {
			rest, used = rest-f, f
		}
		for _, tier := range tr.Tiers {
			take := rest
			if tier.UpTo != 0 {
				if used >= tier.UpTo {
					continue
				}
				take = min(rest, tier.UpTo-used)
			}
			c, _ := tier.Price.Cost(take)
			want += c
			rest, used = rest-take, used+take
		}
		if once.Amount != want {
			t.Fatalf("trial %d: one-shot %d; floor per tier gives %d", trial, once.Amount, want)
		}
	}
}

func TestTenthOfACentPerGigabyte(t *testing.T) {
	// 0.10 EUR per GB, charged per 1-byte ticket: each ticket costs a
	// tenth of a nano; only every tenth ticket charges one nano.
	tr := mustValid(t, &metering.Tariff{ID: "data", Currency: "EUR", Location: time.UTC,
		Tiers: []metering.Tier{{Price: per(100_000_000, 1_000_000_000)}}})
	var st metering.ChargeState
	var sum metering.Nanos
	var nonzero int
	for i := 0; i < 1000; i++ {
		ch, next, err := tr.Price(st, metering.Usage{From: int64(i), To: int64(i + 1), Quantity: 1})
		if err != nil {
			t.Fatal(err)
		}
		st, sum = next, sum+ch.Amount
		if ch.Amount != 0 {
			nonzero++
		}
	}
	if sum != 100 || nonzero != 100 {
		t.Fatalf("1000 one-byte tickets at 0.10 EUR/GB = %d nanos in %d charges; want 100 nanos in 100", sum, nonzero)
	}
}

func TestGraduatedTiersSplitAtEdge(t *testing.T) {
	// First 10 kWh at 0.30/kWh, the rest at 0.20/kWh, monthly.
	tr := mustValid(t, &metering.Tariff{ID: "tiered", Currency: "EUR", Location: time.UTC, Period: metering.PeriodMonth,
		Tiers: []metering.Tier{{UpTo: 10_000, Price: per(300_000_000, 1000)}, {Price: per(200_000_000, 1000)}}})
	at := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC).UnixMilli()
	st := metering.ChargeState{}
	ch, st, _ := tr.Price(st, metering.Usage{From: at, To: at + 1, Quantity: 9_000})
	if ch.Amount != 2_700_000_000 {
		t.Fatalf("9 kWh = %d; want 2.70 EUR", ch.Amount)
	}
	// 2 kWh crossing the 10 kWh edge: 1 kWh at 0.30, 1 kWh at 0.20.
	ch, st, _ = tr.Price(st, metering.Usage{From: at + 1, To: at + 2, Quantity: 2_000})
	if ch.Amount != 500_000_000 || ch.Bands[0].Quantity != 1000 || ch.Bands[1].Quantity != 1000 {
		t.Fatalf("2 kWh across the edge = %d nanos, bands %+v; want 0.50 EUR split 1000/1000", ch.Amount, ch.Bands[:2])
	}
	// Next month the tiers start again.
	next := time.Date(2026, 12, 1, 0, 0, 1, 0, time.UTC).UnixMilli()
	ch, _, _ = tr.Price(st, metering.Usage{From: next, To: next + 1, Quantity: 1_000})
	if ch.Amount != 300_000_000 {
		t.Fatalf("first kWh of December = %d; want 0.30 EUR (tier 1 again)", ch.Amount)
	}
}

// peakTariff: peak 17:00–21:00 on weekdays in Berlin at 0.40/kWh, else 0.20.
func peakTariff(t testing.TB) *metering.Tariff {
	return mustValid(t, &metering.Tariff{ID: "tou", Currency: "EUR", Location: mustLoc(t, "Europe/Berlin"), Period: metering.PeriodMonth,
		Tiers:   []metering.Tier{{UpTo: 100_000, Price: per(200_000_000, 1000)}, {Price: per(150_000_000, 1000)}},
		Windows: []metering.TimeOfUse{{Name: "peak", Weekdays: 0b0111110, From: 17 * 60, To: 21 * 60, Price: per(400_000_000, 1000)}}})
}

func TestTimeOfUseAcrossDaylightSaving(t *testing.T) {
	tr := peakTariff(t)
	peak := len(tr.Tiers) // band of the peak window
	price := func(utc time.Time) metering.Charge {
		ms := utc.UnixMilli()
		ch, _, err := tr.Price(metering.ChargeState{}, metering.Usage{From: ms, To: ms, Quantity: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	// Berlin moved from CET (UTC+1) to CEST (UTC+2) on Sunday 2026-03-29.
	for _, tc := range []struct {
		utc  time.Time
		peak bool
	}{
		{time.Date(2026, 3, 27, 16, 30, 0, 0, time.UTC), true},  // Fri 17:30 CET
		{time.Date(2026, 3, 27, 19, 30, 0, 0, time.UTC), true},  // Fri 20:30 CET
		{time.Date(2026, 3, 27, 20, 30, 0, 0, time.UTC), false}, // Fri 21:30 CET
		{time.Date(2026, 3, 30, 15, 30, 0, 0, time.UTC), true},  // Mon 17:30 CEST
		{time.Date(2026, 3, 30, 19, 30, 0, 0, time.UTC), false}, // Mon 21:30 CEST
		{time.Date(2026, 3, 28, 17, 30, 0, 0, time.UTC), false}, // Saturday
	} {
		ch := price(tc.utc)
		if got := ch.Bands[peak].Quantity == 1000; got != tc.peak {
			t.Errorf("%v (Berlin %v): peak = %v; want %v", tc.utc, tc.utc.In(tr.Location).Format("Mon 15:04 MST"), got, tc.peak)
		}
	}
}

// TestSplitAcrossWindowEdgeByTime shows the documented rule: usage between
// two readings that spans a time-of-use edge is split in proportion to the
// time on each side.
func TestSplitAcrossWindowEdgeByTime(t *testing.T) {
	tr := peakTariff(t)
	berlin := tr.Location
	from := time.Date(2026, 11, 23, 16, 30, 0, 0, berlin) // Monday 16:30
	to := time.Date(2026, 11, 23, 17, 15, 0, 0, berlin)   // 30 min off-peak, 15 min peak
	ch, _, err := tr.Price(metering.ChargeState{}, metering.Usage{From: from.UnixMilli(), To: to.UnixMilli(), Quantity: 3001})
	if err != nil {
		t.Fatal(err)
	}
	off, pk := ch.Bands[0].Quantity, ch.Bands[len(tr.Tiers)].Quantity
	// 3001 × 30/45 = 2000.67 → floor 2000 before the edge, the rest after.
	if off != 2000 || pk != 1001 {
		t.Fatalf("3001 Wh over 16:30–17:15 split %d off-peak / %d peak; want 2000 / 1001", off, pk)
	}
	// On the 23-hour day of the spring change, a whole-day reading puts
	// 4/23 of its usage in the 17:00–21:00 window.
	dayFrom := time.Date(2026, 3, 30, 0, 0, 0, 0, berlin).Add(-24 * time.Hour) // Sun 2026-03-29 00:00 CET
	sunday := peakTariff(t)
	sunday.Windows[0].Weekdays = 1 // Sundays
	sunday.ID = "sunday"
	mustValid(t, sunday)
	ch, _, err = sunday.Price(metering.ChargeState{}, metering.Usage{From: dayFrom.UnixMilli(), To: dayFrom.Add(23 * time.Hour).UnixMilli(), Quantity: 23_000})
	if err != nil {
		t.Fatal(err)
	}
	if got := ch.Bands[len(sunday.Tiers)].Quantity; got != 4000 {
		t.Fatalf("peak share of a 23-hour day = %d of 23000; want 4000", got)
	}
}

func TestFreeAllowanceAndMinimumCharge(t *testing.T) {
	tr := mustValid(t, &metering.Tariff{ID: "free", Currency: "EUR", Location: time.UTC, Period: metering.PeriodDay, Free: 500,
		Tiers: []metering.Tier{{Price: per(1_000_000, 1)}}, MinCharge: 10_000})
	at := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC).UnixMilli()
	ch, st, _ := tr.Price(metering.ChargeState{}, metering.Usage{From: at, To: at, Quantity: 400})
	if ch.Free != 400 || ch.Amount != 0 || ch.TopUp != 0 {
		t.Fatalf("400 free units: %+v; want free 400, nothing charged (the minimum applies only past the allowance)", ch)
	}
	cheap := mustValid(t, &metering.Tariff{ID: "cheap", Currency: "EUR", Location: time.UTC, Period: metering.PeriodDay, Free: 500,
		Tiers: []metering.Tier{{Price: per(1, 1)}}, MinCharge: 10_000})
	_, cst, _ := cheap.Price(metering.ChargeState{}, metering.Usage{From: at, To: at, Quantity: 400})
	tiny, _, _ := cheap.Price(cst, metering.Usage{From: at, To: at, Quantity: 101})
	if tiny.Free != 100 || tiny.Amount != 10_000 || tiny.TopUp != 9_999 {
		t.Fatalf("100 free units and 1 past them at 1 nano: %+v; want the minimum charge 10000", tiny)
	}
	ch, st, _ = tr.Price(st, metering.Usage{From: at, To: at, Quantity: 200})
	if ch.Free != 100 || ch.Amount != 100_000_000 || ch.TopUp != 0 {
		t.Fatalf("200 units past 400 free: %+v; want 100 free, 100 charged", ch)
	}
	ch, _, _ = tr.Price(st, metering.Usage{From: at, To: at, Quantity: 0})
	if ch.Amount != 0 {
		t.Fatalf("zero usage charged %d; the minimum applies only to usage", ch.Amount)
	}
}

func TestPriceOverflowIsAnError(t *testing.T) {
	tr := mustValid(t, &metering.Tariff{ID: "dear", Currency: "EUR", Location: time.UTC, Tiers: []metering.Tier{{Price: per(math.MaxUint64, 1)}}})
	if _, _, err := tr.Price(metering.ChargeState{}, metering.Usage{Quantity: 2}); !errors.Is(err, metering.ErrOverflow) {
		t.Fatalf("Price of 2 × MaxUint64 nanos = %v; want ErrOverflow", err)
	}
	cheap := mustValid(t, &metering.Tariff{ID: "x", Currency: "EUR", Location: time.UTC, Tiers: []metering.Tier{{Price: per(1, 1)}}})
	ch, _, err := cheap.Price(metering.ChargeState{}, metering.Usage{Quantity: math.MaxInt64})
	if err != nil || ch.Amount != math.MaxInt64 {
		t.Fatalf("MaxInt64 units at 1 nano = %d, %v", ch.Amount, err)
	}
	if _, _, err := cheap.Price(metering.ChargeState{}, metering.Usage{Quantity: math.MaxInt64 + 1}); !errors.Is(err, metering.ErrOverflow) {
		t.Fatalf("2^63 nanos = %v; want ErrOverflow", err)
	}
}

func TestStateOfAnotherTariffStartsAfresh(t *testing.T) {
	a := mustValid(t, &metering.Tariff{ID: "a", Currency: "EUR", Location: time.UTC, Tiers: []metering.Tier{{Price: per(1, 3)}}})
	b := mustValid(t, &metering.Tariff{ID: "b", Currency: "EUR", Location: time.UTC, Tiers: []metering.Tier{{Price: per(1, 3)}}})
	_, st, _ := a.Price(metering.ChargeState{}, metering.Usage{Quantity: 2}) // carries 2/3 nano
	ch, _, _ := b.Price(st, metering.Usage{Quantity: 1})
	if ch.Amount != 0 {
		t.Fatalf("a new tariff inherited a remainder: charged %d", ch.Amount)
	}
	ch, _, _ = a.Price(st, metering.Usage{Quantity: 1})
	if ch.Amount != 1 {
		t.Fatalf("same tariff: 2/3 + 1/3 = %d nanos; want 1", ch.Amount)
	}
}
