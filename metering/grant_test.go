package metering_test

import (
	"errors"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/metering"
)

func evTariff(t *testing.T) *metering.Tariff {
	t.Helper()
	set, err := metering.ParseTariffs("t.yaml", []byte("tariffs:\n  - id: ev\n    currency: EUR\n    price: 0.30\n    per: 1000\n"))
	if err != nil {
		t.Fatal(err)
	}
	return set.Get("ev")
}

// TestReservation: a reservation lowers what is available, not the
// balance; a charge under a grant is paid from it first; the rest comes
// from what is available, or the charge is refused whole.
func TestReservation(t *testing.T) {
	a := metering.Account{ID: "a", Kind: metering.Prepaid, Currency: "EUR", Balance: 1000}
	a2, err := a.Reserve(600)
	if err != nil {
		t.Fatal(err)
	}
	if avail, _ := a2.Available(); a2.Balance != 1000 || avail != 400 {
		t.Fatalf("after reserving 600 of 1000: balance %d, available %d", a2.Balance, avail)
	}
	if _, err := a2.Reserve(401); !errors.Is(err, metering.ErrInsufficientFunds) {
		t.Fatalf("reserved past what is available: %v", err)
	}
	g := metering.Grant{ID: 1, Reserved: 600, Held: 600}
	_, a3, paid, err := a2.ChargeGrant(metering.Money{Nanos: 700, Currency: "EUR"}, g.Reserved, 1, "d/1")
	if err != nil || paid != 600 || a3.Balance != 300 || a3.Reserved != 0 {
		t.Fatalf("charge 700 under a grant of 600: paid %d, %+v, %v", paid, a3, err)
	}
	if _, _, _, err := a2.ChargeGrant(metering.Money{Nanos: 1001, Currency: "EUR"}, g.Reserved, 1, "d/1"); !errors.Is(err, metering.ErrInsufficientFunds) {
		t.Fatalf("a charge neither the grant nor the balance covers: %v", err)
	}
	g2, err := g.Spend(2000, 700, paid, 5)
	if err != nil || g2.Reserved != 0 || g2.Paid != 600 || g2.Charged != 700 || g2.Check() != nil {
		t.Fatalf("Spend = %+v, %v", g2, err)
	}
}

// TestGrantLifecycle: extending sets the limit from where the device
// stands and the threshold by the terms; a grant closes on expiry or
// idleness and gives back what it reserves; the codec keeps it whole.
func TestGrantLifecycle(t *testing.T) {
	terms := metering.GrantTerms{Validity: time.Minute, Idle: 10 * time.Second}.WithDefaults()
	g, err := metering.Grant{ID: 7, Device: "evse", Account: "a", Meter: "energy_wh"}.Extend(1000, 500, 150, 10_000, terms)
	if err != nil || g.Limit != 1500 || g.Threshold != 1400 || g.Expiry != 70_000 || g.Reserved != 150 {
		t.Fatalf("Extend = %+v, %v", g, err)
	}
	if g, err = g.Spend(450, 135, 135, 20_000); err != nil {
		t.Fatal(err)
	}
	g, _ = g.Extend(1450, 500, 150, 21_000, terms)
	if g.Limit != 2000 || g.Threshold != 1900 || g.Reserved != 165 || g.Check() != nil {
		t.Fatalf("extended: %+v", g)
	}
	if s := g.Due(30_999); s != metering.GrantOpen {
		t.Fatalf("Due before idle = %v", s)
	}
	if s := g.Due(31_000); s != metering.GrantIdle {
		t.Fatalf("Due after 10 s idle = %v", s)
	}
	c, back := g.Close(metering.GrantIdle, 31_000)
	if back != 165 || c.Reserved != 0 || c.Check() != nil {
		t.Fatalf("Close gave back %d: %+v", back, c)
	}
	b, _ := c.MarshalBinary()
	var d metering.Grant
	if err := d.UnmarshalBinary(b); err != nil || d != c {
		t.Fatalf("codec: %+v, %v", d, err)
	}
	c.Paid++ // reserved in all no longer adds up
	b, _ = c.MarshalBinary()
	if err := d.UnmarshalBinary(b); !errors.Is(err, metering.ErrBadState) {
		t.Fatalf("a grant that does not add up decoded: %v", err)
	}
}

// TestQuoteAndUnitsFor: a quote is the price of the units in one ticket;
// UnitsFor is the most units an amount buys.
func TestQuoteAndUnitsFor(t *testing.T) {
	tr := evTariff(t) // 0.30 EUR per 1000 Wh: 300,000 nanos per Wh
	q, err := tr.Quote(metering.ChargeState{}, 10_000, 1)
	if err != nil || q != 3_000_000_000 {
		t.Fatalf("Quote(10 kWh) = %d, %v", q, err)
	}
	n, _ := tr.UnitsFor(metering.ChargeState{}, 1_000_000_000, 1<<40, 1)
	if n != 3333 {
		t.Fatalf("UnitsFor(1 EUR) = %d; want 3333", n)
	}
	if n, _ := tr.UnitsFor(metering.ChargeState{}, 1_000_000_000, 100, 1); n != 100 {
		t.Fatalf("UnitsFor bounded by 100 = %d", n)
	}
}

// TestAccountReservedCodec: an account record keeps its reservation, and
// one that reserves nothing is encoded as before.
func TestAccountReservedCodec(t *testing.T) {
	a := metering.Account{ID: "a", Kind: metering.Prepaid, Currency: "EUR", Balance: 10, Seq: 2}
	plain, _ := a.MarshalBinary()
	a.Reserved = 7
	b, _ := a.MarshalBinary()
	var back metering.Account
	if err := back.UnmarshalBinary(b); err != nil || back != a || len(b) <= len(plain) {
		t.Fatalf("codec: %+v, %v", back, err)
	}
}
