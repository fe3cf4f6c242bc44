package metering_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/metering"
)

func loadSample(t testing.TB) *metering.TariffSet {
	b, err := os.ReadFile("testdata/tariffs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set, err := metering.ParseTariffs("tariffs.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestParseSampleTariffs(t *testing.T) {
	set := loadSample(t)
	ev := set.Get("evse-dc")
	if ev == nil || len(ev.Tiers) != 2 || ev.Tiers[1].Price != (metering.Price{Nanos: 340_000_000, Per: 1000}) ||
		len(ev.Windows) != 1 || ev.Windows[0].Weekdays != 0b0111110 || ev.Windows[0].From != 17*60 || ev.MinCharge != 10_000_000 ||
		ev.Location.String() != "Europe/Berlin" {
		t.Fatalf("evse-dc = %+v", ev)
	}
	if d := set.Get("data-eu"); d == nil || d.Tiers[0].Price != (metering.Price{Nanos: 100_000_000, Per: 1_000_000_000}) || d.Period != metering.PeriodNone {
		t.Fatalf("data-eu = %+v", d)
	}
	// Normalising is stable: the normal form parses to the same tariffs
	// and normalises to itself.
	norm, err := set.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	again, err := metering.ParseTariffs("normal.yaml", norm)
	if err != nil {
		t.Fatalf("normal form does not parse: %v\n%s", err, norm)
	}
	norm2, _ := again.Normalize()
	if string(norm) != string(norm2) {
		t.Fatalf("normal form is not stable:\n%s\n---\n%s", norm, norm2)
	}
}

func TestTariffFileErrors(t *testing.T) {
	const head = "tariffs:\n  - id: t\n    currency: EUR\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string // each must appear in the error
	}{
		{"overlapping tiers", head + "    tiers:\n      - {up_to: 100, price: 1}\n      - {up_to: 50, price: 1}\n      - {price: 1}\n",
			[]string{"t.yaml:6:", "tariffs[0].tiers[1].up_to", "tiers overlap"}},
		{"unknown time zone", head + "    timezone: Mars/Olympus_Mons\n    price: 1\n",
			[]string{"t.yaml:4:", "tariffs[0].timezone", "unknown time zone \"Mars/Olympus_Mons\""}},
		{"negative price", head + "    price: -0.10\n",
			[]string{"t.yaml:4:", "tariffs[0].price", "negative price"}},
		{"currency mismatch in price", head + "    price: 0.10 USD\n",
			[]string{"t.yaml:4:", "tariffs[0].price", "currency USD does not match the tariff's EUR"}},
		{"unknown field", head + "    price: 1\n    colour: red\n",
			[]string{"t.yaml:5:", "tariffs[0].colour", "unknown field"}},
		{"too precise", head + "    price: 0.0000000001\n",
			[]string{"t.yaml:4:", "more than nine decimal places"}},
		{"per zero", head + "    price: 1\n    per: 0\n", []string{"t.yaml:5:", "per must be at least 1"}},
		{"no price", head, []string{"t.yaml:2:", "no price"}},
		{"price and tiers", head + "    price: 1\n    tiers:\n      - {price: 1}\n", []string{"either price or tiers"}},
		{"last tier limited", head + "    tiers:\n      - {up_to: 5, price: 1}\n", []string{"the last tier has no up_to"}},
		{"overlapping windows", head + "    price: 1\n    time_of_use:\n      - {name: a, days: all, from: \"08:00\", to: \"12:00\", price: 2}\n      - {name: b, days: [mon], from: \"11:00\", to: \"13:00\", price: 3}\n",
			[]string{"t.yaml:7:", "time_of_use[1]", "overlaps window \"a\""}},
		{"window past midnight", head + "    price: 1\n    time_of_use:\n      - {name: n, days: all, from: \"22:00\", to: \"06:00\", price: 2}\n",
			[]string{"is not before to"}},
		{"bad day", head + "    price: 1\n    time_of_use:\n      - {name: n, days: [funday], from: \"01:00\", to: \"02:00\", price: 2}\n",
			[]string{"\"funday\""}},
		{"bad currency", "tariffs:\n  - id: t\n    currency: euro\n    price: 1\n", []string{"t.yaml:3:", "not a three-letter ISO 4217 code"}},
		{"duplicate id", head + "    price: 1\n  - id: t\n    currency: EUR\n    price: 2\n", []string{"defined twice"}},
		{"bad period", head + "    price: 1\n    period: fortnight\n", []string{"t.yaml:5:", "\"fortnight\""}},
		{"not yaml", "tariffs: [", []string{"t.yaml"}},
		{"empty", "", []string{"empty file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := metering.ParseTariffs("t.yaml", []byte(tc.yaml))
			if !errors.Is(err, metering.ErrBadTariff) {
				t.Fatalf("err = %v; want ErrBadTariff", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func FuzzParseTariffs(f *testing.F) {
	b, _ := os.ReadFile("testdata/tariffs.yaml")
	f.Add(b)
	f.Add([]byte("tariffs:\n  - {id: a, currency: EUR, price: 1, per: 3}\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		set, err := metering.ParseTariffs("f.yaml", in)
		if err != nil {
			if !errors.Is(err, metering.ErrBadTariff) {
				t.Fatalf("error without ErrBadTariff: %v", err)
			}
			return
		}
		// Whatever parses prices a usage without panicking and normalises.
		for _, tr := range set.Tariffs {
			if _, _, err := tr.Price(metering.ChargeState{}, metering.Usage{From: 0, To: 86_400_000, Quantity: 1e6}); err != nil && !errors.Is(err, metering.ErrOverflow) {
				t.Fatal(err)
			}
		}
		if _, err := set.Normalize(); err != nil {
			t.Fatal(err)
		}
	})
}
