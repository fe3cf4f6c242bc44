package metering_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/farthing-iot/farthing/metering"
)

// Rounding to each currency's minor unit: cents for EUR, yen for JPY,
// fils (3 decimals) for BHD; the rest is carried, nothing is lost.
func TestSplitPayoutMinorUnits(t *testing.T) {
	for _, tc := range []struct {
		cur     metering.Currency
		gross   metering.Nanos
		payees  []metering.Nanos
		carried metering.Nanos
	}{
		{"EUR", 10_005_000_001, []metering.Nanos{7_000_000_000, 3_000_000_000}, 5_000_001},          // 10.005000001 → 10.00 paid
		{"JPY", 1_234_567_890_123, []metering.Nanos{864_000_000_000, 370_000_000_000}, 567_890_123}, // 1234.56… yen → 1234 yen
		{"BHD", 1_000_900_000, []metering.Nanos{700_000_000, 300_000_000}, 900_000},                 // 1.0009 → 1.000
	} {
		s, err := metering.SplitPayout(tc.gross, 0, tc.cur, metering.PlatformFee{}, []uint64{70, 30})
		if err != nil {
			t.Fatal(err)
		}
		if s.Payees[0] != tc.payees[0] || s.Payees[1] != tc.payees[1] || s.CarryOut != tc.carried || s.Fee != 0 {
			t.Errorf("%s %d: %+v; want payees %v, carry %d", tc.cur, tc.gross, s, tc.payees, tc.carried)
		}
	}
}

// Weights that do not divide the amount: 1.00 EUR among three equal
// payees is 34 + 33 + 33 cents, the first taking the extra cent.
func TestSplitPayoutWeightsThatDoNotDivide(t *testing.T) {
	s, err := metering.SplitPayout(1_000_000_000, 0, "EUR", metering.PlatformFee{}, []uint64{1, 1, 1})
	if err != nil {
		t.Fatal(err)
	}
	if s.Payees[0] != 340_000_000 || s.Payees[1] != 330_000_000 || s.Payees[2] != 330_000_000 || s.CarryOut != 0 {
		t.Fatalf("%+v", s)
	}
}

// Carried money paid its fee when it first came: the next payout takes
// the fee on its new money only. 10.005 EUR at 5% pays 9.50 and carries
// 0.00475; the next 10.00 EUR pays its fee on 10.00, not on 10.00475.
func TestPayoutFeeOnNewMoneyOnly(t *testing.T) {
	fee := metering.PlatformFee{BasisPoints: 500}
	first, _ := metering.SplitPayout(10_005_000_000, 0, "EUR", fee, []uint64{1})
	if first.Fee != 500_250_000 || first.Payees[0] != 9_500_000_000 || first.CarryOut != 4_750_000 {
		t.Fatalf("first payout %+v", first)
	}
	next, _ := metering.SplitPayout(10_000_000_000, first.CarryOut, "EUR", fee, []uint64{1})
	if next.Gross != 10_004_750_000 || next.Fee != 500_000_000 || next.Payees[0] != 9_500_000_000 || next.CarryOut != 4_750_000 {
		t.Fatalf("next payout %+v; want the fee on 10.00 EUR only", next)
	}
}

// The platform fee: basis points plus a fixed part, capped.
func TestPlatformFee(t *testing.T) {
	f := metering.PlatformFee{BasisPoints: 500, Fixed: 100_000_000, Cap: 2_000_000_000} // 5% + 0.10, at most 2.00
	for gross, want := range map[metering.Nanos]metering.Nanos{
		10_000_000_000:  600_000_000,   // 0.50 + 0.10
		100_000_000_000: 2_000_000_000, // 5.10 capped at 2.00
		50_000_000:      50_000_000,    // never more than the gross
	} {
		if got, _ := f.Of(gross); got != want {
			t.Errorf("fee of %d = %d; want %d", gross, got, want)
		}
	}
}

// Property: for random amounts, currencies, fees and weights, fee +
// payees + carry = gross to the nano, every payee is paid whole minor
// units, and nothing negative is paid.
func TestSplitPayoutLosesNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	curs := []metering.Currency{"EUR", "JPY", "BHD", "USD", "CLF"}
	for i := 0; i < 20000; i++ {
		fresh := metering.Nanos(r.Int64N(1_000_000_000_000_000))
		carry := metering.Nanos(r.Int64N(2_000_000_000)) - 1_000_000_000
		gross := fresh + carry
		cur := curs[r.IntN(len(curs))]
		fee := metering.PlatformFee{BasisPoints: uint32(r.IntN(3000)), Fixed: metering.Nanos(r.Int64N(1_000_000_000)), Cap: metering.Nanos(r.Int64N(5)) * 1_000_000_000}
		weights := make([]uint64, 1+r.IntN(5))
		for j := range weights {
			weights[j] = uint64(1 + r.IntN(100))
		}
		s, err := metering.SplitPayout(fresh, carry, cur, fee, weights)
		if err != nil {
			t.Fatal(err)
		}
		sum := s.Fee + s.CarryOut
		unit := metering.Nanos(1)
		for d := cur.MinorDigits(); d < 9; d++ {
			unit *= 10
		}
		for _, p := range s.Payees {
			if p < 0 || p%unit != 0 {
				t.Fatalf("%s payee %d is not whole minor units", cur, p)
			}
			sum += p
		}
		if f, _ := fee.Of(fresh); gross > 0 && s.Fee != min(f, gross) {
			t.Fatalf("fee %d on fresh %d and carry %d; want %d, on the fresh money only", s.Fee, fresh, carry, min(f, gross))
		}
		if sum != gross || s.Fee < 0 || (gross > 0 && (s.CarryOut < 0 || s.CarryOut >= unit)) {
			t.Fatalf("gross %d %s fee %+v weights %v: %+v (sum %d)", gross, cur, fee, weights, s, sum)
		}
	}
}

func TestInMinorUnits(t *testing.T) {
	for _, tc := range []struct {
		cur  metering.Currency
		n    metering.Nanos
		want string
	}{
		{"EUR", 1_234_567_890, "123.456789"},
		{"EUR", 10_000_000, "1"},
		{"EUR", 1, "0.0000001"},
		{"EUR", -15_000_000, "-1.5"},
		{"JPY", 5_000_000_001, "5.000000001"},
		{"JPY", 0, "0"},
		{"BHD", 1_234_500_000, "1234.5"},
		{"EUR", math.MinInt64, "-922337203685.4775808"},
	} {
		if got := tc.cur.InMinorUnits(tc.n); got != tc.want {
			t.Errorf("%s %d: %q, want %q", tc.cur, tc.n, got, tc.want)
		}
	}
	if metering.Currency("BHD").MinorUnit() != 1_000_000 || metering.Currency("JPY").MinorUnit() != 1_000_000_000 {
		t.Error("minor units of BHD or JPY")
	}
}
