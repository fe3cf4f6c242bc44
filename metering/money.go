package metering

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"

	"github.com/bojanz/currency"
)

// NanosPerUnit is the number of nano-units in one unit of a currency.
const NanosPerUnit = 1_000_000_000

// Nanos is an amount in nano-units (1e-9) of some currency: a thousandth of
// a cent is 10,000 nanos. The range is ±9.2 billion currency units. All
// arithmetic is checked: a result that does not fit is ErrOverflow.
type Nanos int64

// Add returns a+b, or ErrOverflow.
func (a Nanos) Add(b Nanos) (Nanos, error) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, fmt.Errorf("%w: %d + %d", ErrOverflow, a, b)
	}
	return s, nil
}

// Sub returns a-b, or ErrOverflow.
func (a Nanos) Sub(b Nanos) (Nanos, error) {
	if b == math.MinInt64 {
		return 0, fmt.Errorf("%w: %d - %d", ErrOverflow, a, b)
	}
	return a.Add(-b)
}

// Currency is an ISO 4217 alphabetic code: three upper-case letters.
type Currency string

// Valid reports whether c is three upper-case ASCII letters.
func (c Currency) Valid() bool {
	if len(c) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if c[i] < 'A' || c[i] > 'Z' {
			return false
		}
	}
	return true
}

// MinorDigits is the number of decimal digits of the currency's minor unit
// (ISO 4217 exponent, from CLDR's data through github.com/bojanz/currency):
// 2 for EUR and USD, 0 for JPY, 3 for BHD and KWD. A code CLDR does not
// know gets 2.
func (c Currency) MinorDigits() int {
	if d, ok := currency.GetDigits(string(c)); ok {
		return int(d)
	}
	return 2
}

// MinorUnit is one minor unit of the currency in nanos: 10,000,000 for
// EUR (a cent), 1,000,000,000 for JPY, 1,000,000 for BHD (a fils).
func (c Currency) MinorUnit() Nanos {
	unit := Nanos(1)
	for i := c.MinorDigits(); i < 9; i++ {
		unit *= 10
	}
	return unit
}

// InMinorUnits writes n in minor units of the currency, exactly: 1.23456789
// EUR is "123.456789" (cents), 5 JPY is "5"; no trailing zeros.
func (c Currency) InMinorUnits(n Nanos) string {
	unit := c.MinorUnit()
	sign := ""
	u := uint64(n)
	if n < 0 {
		sign, u = "-", uint64(-(n+1))+1 // also for the smallest Nanos
	}
	whole, frac := u/uint64(unit), u%uint64(unit)
	if frac == 0 {
		return sign + strconv.FormatUint(whole, 10)
	}
	f := strconv.FormatUint(frac+uint64(unit), 10)[1:] // zero-padded to the unit's digits
	return sign + strconv.FormatUint(whole, 10) + "." + strings.TrimRight(f, "0")
}

// Money is an amount with its currency.
type Money struct {
	Nanos    Nanos
	Currency Currency
}

// Add returns m+o; both must be in the same currency.
func (m Money) Add(o Money) (Money, error) {
	if m.Currency != o.Currency {
		return Money{}, fmt.Errorf("%w: %s and %s", ErrCurrencyMismatch, m.Currency, o.Currency)
	}
	n, err := m.Nanos.Add(o.Nanos)
	return Money{n, m.Currency}, err
}

// Sub returns m-o; both must be in the same currency.
func (m Money) Sub(o Money) (Money, error) {
	if m.Currency != o.Currency {
		return Money{}, fmt.Errorf("%w: %s and %s", ErrCurrencyMismatch, m.Currency, o.Currency)
	}
	n, err := m.Nanos.Sub(o.Nanos)
	return Money{n, m.Currency}, err
}

// String writes the amount as a decimal with at least the currency's
// minor-unit digits (ISO 4217) and at most nine fraction digits, then the
// currency, exactly: "1.50 EUR", "0.000012 EUR", "413 JPY", "0.125 BHD".
func (m Money) String() string {
	return formatNanos(m.Nanos, m.Currency.MinorDigits()) + " " + string(m.Currency)
}

// FormatNanos writes n as a decimal number of currency units with at least
// two and at most nine fraction digits, exactly: no rounding.
func FormatNanos(n Nanos) string { return formatNanos(n, 2) }

// formatNanos writes n with at least minDigits and at most nine fraction
// digits; none (and no point) when minDigits is 0 and n is whole.
func formatNanos(n Nanos, minDigits int) string {
	neg := n < 0
	u := uint64(n)
	if neg {
		u = -u // two's complement: correct for MinInt64 too
	}
	whole, frac := u/NanosPerUnit, u%NanosPerUnit
	f := strconv.FormatUint(frac+NanosPerUnit, 10)[1:] // nine digits, zero-padded
	f = strings.TrimRight(f, "0")
	for len(f) < minDigits {
		f += "0"
	}
	s := strconv.FormatUint(whole, 10)
	if f != "" {
		s += "." + f
	}
	if neg {
		s = "-" + s
	}
	return s
}

// ParseMoney reads "DECIMAL CURRENCY", such as "0.000012 EUR" or "-3 USD".
// The decimal has at most nine fraction digits; nothing is rounded.
func ParseMoney(s string) (Money, error) {
	num, cur, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return Money{}, fmt.Errorf("%w: %q: want DECIMAL CURRENCY, e.g. \"0.10 EUR\"", ErrBadMoney, s)
	}
	c := Currency(strings.TrimSpace(cur))
	if !c.Valid() {
		return Money{}, fmt.Errorf("%w: %q: currency must be a three-letter ISO 4217 code", ErrBadMoney, s)
	}
	n, err := ParseNanos(num)
	if err != nil {
		return Money{}, err
	}
	return Money{n, c}, nil
}

// ParseNanos reads a decimal number of currency units ("12", "0.5",
// "-0.000000001") into nanos, exactly. More than nine fraction digits,
// exponents, spaces, or a value out of range are errors.
func ParseNanos(s string) (Nanos, error) {
	bad := func(why string) (Nanos, error) {
		return 0, fmt.Errorf("%w: %q: %s", ErrBadMoney, s, why)
	}
	t := s
	neg := false
	if strings.HasPrefix(t, "-") {
		neg, t = true, t[1:]
	} else if strings.HasPrefix(t, "+") {
		t = t[1:]
	}
	whole, frac, hasDot := strings.Cut(t, ".")
	if whole == "" && frac == "" || hasDot && frac == "" {
		return bad("not a decimal number")
	}
	if len(frac) > 9 {
		return bad("more than nine decimal places (nano-units are the smallest amount)")
	}
	for _, part := range []string{whole, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return bad("not a decimal number")
			}
		}
	}
	if whole == "" {
		whole = "0"
	}
	w, err := strconv.ParseUint(whole, 10, 64)
	if err != nil {
		return bad("out of range")
	}
	f := uint64(0)
	if frac != "" {
		f, _ = strconv.ParseUint(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	}
	hi, lo := bits.Mul64(w, NanosPerUnit)
	lo, carry := bits.Add64(lo, f, 0)
	limit := uint64(math.MaxInt64)
	if neg {
		limit++
	}
	if hi != 0 || carry != 0 || lo > limit {
		return 0, fmt.Errorf("%w: %q is out of range (±9.2e9 units)", ErrOverflow, s)
	}
	if neg {
		return Nanos(-lo), nil // -lo wraps to MinInt64 exactly when lo == 2^63
	}
	return Nanos(lo), nil
}
