package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sampleTariffs = "../../metering/testdata/tariffs.yaml"

func TestTariffCheckPrintsNormalForm(t *testing.T) {
	out := mustRun(t, nil, "tariff", "check", sampleTariffs)
	for _, want := range []string{"id: evse-dc", "price: 0.34 EUR", "days: [mon, tue, wed, thu, fri]", "timezone: Europe/Berlin", "per: 1000000000"} {
		if !strings.Contains(out, want) {
			t.Errorf("tariff check output lacks %q:\n%s", want, out)
		}
	}
	// The normal form checks again to itself.
	p := filepath.Join(t.TempDir(), "n.yaml")
	os.WriteFile(p, []byte(out), 0o644)
	if again := mustRun(t, nil, "tariff", "check", p); again != out {
		t.Errorf("normal form is not stable")
	}
}

func TestTariffQuote(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		// 2 kWh at 0.39 EUR/kWh on a Sunday (no peak).
		{[]string{"--tariff", "evse-dc", "--from", "1000", "--to", "3000", "--at", "2026-11-22T18:00:00+01:00"}, "0.78 EUR\n"},
		// The same at Monday 18:00 is peak: 0.49 EUR/kWh.
		{[]string{"--tariff", "evse-dc", "--from", "1000", "--to", "3000", "--at", "2026-11-23T18:00:00+01:00"}, "0.98 EUR\n"},
		// Minimum charge: 1 Wh costs 0.00039 EUR, topped up to 0.01.
		{[]string{"--tariff", "evse-dc", "--from", "0", "--to", "1", "--at", "2026-11-22T10:00:00Z"}, "0.01 EUR\n"},
		// 1 MB of data at 0.10 EUR/GB.
		{[]string{"--tariff", "data-eu", "--from", "0", "--to", "1000000", "--at", "2026-11-22T10:00:00Z"}, "0.0001 EUR\n"},
		// 600 Wh on a plug with 500 Wh free per day, 200 already used: 300 free, 300 at 0.30/kWh.
		{[]string{"--tariff", "plug-home", "--from", "0", "--to", "600", "--used", "200", "--at", "2026-11-22T10:00:00Z"}, "0.09 EUR\n"},
	} {
		out := mustRun(t, nil, append([]string{"tariff", "quote", "--tariffs", sampleTariffs}, tc.args...)...)
		if !strings.HasPrefix(out, tc.want) {
			t.Errorf("quote %v = %q; want first line %q", tc.args, out, tc.want)
		}
	}
}

func TestTariffBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("tariffs:\n  - id: x\n    currency: EUR\n    tiers:\n      - {up_to: 10, price: 1}\n      - {up_to: 5, price: 1}\n      - {price: 1}\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tariff"}, "want a subcommand"},
		{[]string{"tariff", "check", bad}, "bad.yaml:6: tariffs[0].tiers[1].up_to: tiers overlap"},
		{[]string{"tariff", "check", filepath.Join(dir, "none.yaml")}, "no such file"},
		{[]string{"tariff", "quote", "--tariffs", sampleTariffs, "--tariff", "nope", "--from", "0", "--to", "1", "--at", "2026-11-22T10:00:00Z"}, "no tariff \"nope\""},
		{[]string{"tariff", "quote", "--tariffs", sampleTariffs, "--tariff", "evse-dc", "--from", "5", "--to", "1", "--at", "2026-11-22T10:00:00Z"}, "register went backwards"},
		{[]string{"tariff", "quote", "--tariffs", sampleTariffs, "--tariff", "evse-dc", "--from", "0", "--to", "1", "--at", "yesterday"}, "want RFC 3339"},
		{[]string{"tariff", "quote", "--tariffs", sampleTariffs, "--from", "0", "--to", "1", "--at", "2026-11-22T10:00:00Z"}, "--tariff is required"},
	} {
		code, _, errOut := farthing(t, nil, tc.args...)
		if code != exitBad || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: exit %d, %q; want %d and one line with %q", tc.args, code, errOut, exitBad, tc.want)
		}
	}
}
