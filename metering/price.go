package metering

import (
	"fmt"
	"math"
	"math/bits"
)

// Price is a rational price: Nanos nano-units of the tariff's currency per
// Per base units of the meter. 0.10 EUR per GB is {Nanos: 100_000_000,
// Per: 1_000_000_000} for a meter in bytes: exact, although it is 1e-10 EUR
// per byte.
type Price struct {
	Nanos uint64
	Per   uint64 // ≥ 1
}

// Valid reports whether the price has a non-zero denominator.
func (p Price) Valid() bool { return p.Per > 0 }

// Cost returns floor(q × Nanos / Per): what q units cost with no carried
// remainder. It is the reference the exact charging is held to.
func (p Price) Cost(q uint64) (Nanos, error) {
	n, _, err := p.charge(q, 0)
	return n, err
}

// charge returns floor((rem + q×Nanos) / Per) and the new remainder
// (rem + q×Nanos) mod Per, computed in 128 bits. rem must be < Per. Summed
// over any split of a quantity, the amounts equal the Cost of the whole:
// the remainder carries what a nano could not hold.
func (p Price) charge(q, rem uint64) (Nanos, uint64, error) {
	hi, lo := bits.Mul64(q, p.Nanos)
	lo, c := bits.Add64(lo, rem, 0)
	hi += c
	if hi >= p.Per {
		return 0, rem, fmt.Errorf("%w: %d units at %d/%d nanos", ErrOverflow, q, p.Nanos, p.Per)
	}
	quo, r := bits.Div64(hi, lo, p.Per)
	if quo > math.MaxInt64 {
		return 0, rem, fmt.Errorf("%w: %d units at %d/%d nanos", ErrOverflow, q, p.Nanos, p.Per)
	}
	return Nanos(quo), r, nil
}

// String writes the price as "0.30 EUR per 1000" without the currency,
// which belongs to the tariff: "0.30/1000".
func (p Price) String() string {
	return FormatNanos(Nanos(p.Nanos)) + "/" + fmt.Sprint(p.Per)
}
