package metering

import (
	"errors"
	"testing"
)

// A record written field by field reads back the same, and a record that
// is cut short, or read past its end, is an error that sticks.
func TestStateWriterReaderRoundTrip(t *testing.T) {
	b := NewStateWriter().Uint(1<<40 + 7).Int(-42).String("plug-1").Rest([]byte("raw"))
	r := NewStateReader(b, "test record")
	if u, i, s := r.Uint(), r.Int(), r.String(); u != 1<<40+7 || i != -42 || s != "plug-1" {
		t.Fatalf("read %d, %d, %q; want 1<<40+7, -42, plug-1", u, i, s)
	}
	if !r.More() {
		t.Fatal("More = false before the rest is read")
	}
	if rest := string(r.Rest()); rest != "raw" {
		t.Fatalf("Rest = %q; want raw", rest)
	}
	if r.More() || r.Done() != nil || r.Err() != nil {
		t.Fatalf("after the whole record: More %v, Done %v, Err %v", r.More(), r.Done(), r.Err())
	}

	short := NewStateReader(b[:3], "short record")
	short.Uint()
	short.Int()
	if s := short.String(); s != "" || short.Err() == nil || short.Done() == nil || short.Rest() != nil {
		t.Fatalf("a record cut short: %q, Err %v; want an error that sticks", s, short.Err())
	}
	left := NewStateReader(NewStateWriter().Uint(1).Uint(2), "longer record")
	left.Uint()
	if left.Done() == nil {
		t.Fatal("Done with a field unread: no error")
	}
	failed := NewStateReader(NewStateWriter().Uint(99), "range")
	if failed.Uint(); true {
		failed.Fail("99 is out of range")
	}
	if failed.Err() == nil {
		t.Fatal("Fail left no error")
	}
}

// Money of two currencies neither adds nor subtracts; of one, it does,
// exactly.
func TestMoneyArithmetic(t *testing.T) {
	a, b := Money{Nanos: 5, Currency: "EUR"}, Money{Nanos: 3, Currency: "EUR"}
	if s, err := a.Add(b); err != nil || s.Nanos != 8 {
		t.Errorf("5 + 3 = %v, %v", s, err)
	}
	if d, err := b.Sub(a); err != nil || d.Nanos != -2 {
		t.Errorf("3 - 5 = %v, %v", d, err)
	}
	usd := Money{Nanos: 1, Currency: "USD"}
	if _, err := a.Add(usd); !errors.Is(err, ErrCurrencyMismatch) {
		t.Errorf("EUR + USD: %v; want ErrCurrencyMismatch", err)
	}
	if _, err := a.Sub(usd); !errors.Is(err, ErrCurrencyMismatch) {
		t.Errorf("EUR - USD: %v; want ErrCurrencyMismatch", err)
	}
}

// The names of kinds and outcomes are what reports and logs print.
func TestKindNames(t *testing.T) {
	for got, want := range map[string]string{
		Prepaid.String(): "prepaid", Postpaid.String(): "postpaid",
		EntryCharge.String(): "charge", EntryTopUp.String(): "top_up",
		Counted.String(): "counted", Baseline.String(): "baseline",
	} {
		if got != want {
			t.Errorf("name %q; want %q", got, want)
		}
	}
}

// Money prints the currency's minor-unit digits at least (ISO 4217), and
// every nano it has.
func TestMoneyInMinorUnitDigits(t *testing.T) {
	for _, c := range []struct {
		n    Nanos
		cur  Currency
		want string
	}{
		{413_000_000_000, "JPY", "413 JPY"},
		{413_500_000_000, "JPY", "413.5 JPY"},
		{0, "BHD", "0.000 BHD"},
		{125_000_000, "BHD", "0.125 BHD"},
		{1_500_000_000, "EUR", "1.50 EUR"},
		{12_000, "EUR", "0.000012 EUR"},
		{-10_000_000, "EUR", "-0.01 EUR"},
	} {
		if got := (Money{Nanos: c.n, Currency: c.cur}).String(); got != c.want {
			t.Errorf("%d %s = %q; want %q", c.n, c.cur, got, c.want)
		}
	}
}
