package metering

import (
	"fmt"
	"math"
)

// Rounding is how a settlement turns nanos into an amount a payout rail
// can pay (whole minor units: cents).
type Rounding uint8

// Rounding rules.
const (
	// RoundCarry pays the whole minor units and carries the rest, owed,
	// into the next settlement of the same provider and account. Nothing is
	// ever rounded away: the default.
	RoundCarry Rounding = iota
	// RoundHalfEven rounds to the nearest minor unit, ties to even (for a
	// final settlement, when nothing will follow).
	RoundHalfEven
	// RoundDown truncates toward zero.
	RoundDown
)

func (r Rounding) String() string {
	switch r {
	case RoundCarry:
		return "carry"
	case RoundHalfEven:
		return "half_even"
	case RoundDown:
		return "down"
	}
	return fmt.Sprintf("rounding(%d)", r)
}

// Settlement is what one provider is paid for one account at one time.
// Gross = Payout + CarryOut + Fee + Σ Payees − RoundingDifference: every
// nano is accounted for.
type Settlement struct {
	Provider string
	Account  string
	Currency Currency
	// Gross is the sum of the sealed amounts settled plus CarryIn.
	Gross   Nanos
	CarryIn Nanos
	// Payout is what leaves, in whole minor units.
	Payout Nanos
	// CarryOut is owed into the next settlement (RoundCarry).
	CarryOut Nanos
	// RoundingDifference is Payout + CarryOut − Gross: zero with RoundCarry.
	RoundingDifference Nanos
	Rule               Rounding
	// Fee and Payees are for a platform fee and a split among several
	// payees of the payout (see Split); zero and empty when not used.
	Fee    Nanos
	Payees []Payee
}

// Payee is one recipient's share of a payout.
type Payee struct {
	ID     string
	Amount Nanos
}

// Settle rounds gross (amounts already summed, plus what an earlier
// settlement carried) to the currency's minor unit by rule.
func Settle(provider, account string, cur Currency, amounts []Nanos, carryIn Nanos, rule Rounding) (Settlement, error) {
	s := Settlement{Provider: provider, Account: account, Currency: cur, CarryIn: carryIn, Rule: rule}
	gross := carryIn
	for _, a := range amounts {
		var err error
		if gross, err = gross.Add(a); err != nil {
			return Settlement{}, err
		}
	}
	s.Gross = gross
	unit := cur.MinorUnit()
	whole, rest := gross/unit*unit, gross%unit // truncated toward zero
	switch rule {
	case RoundCarry:
		s.Payout, s.CarryOut = whole, rest
	case RoundDown:
		s.Payout = whole
	case RoundHalfEven:
		s.Payout = whole
		half := unit / 2
		abs := rest
		if abs < 0 {
			abs = -abs
		}
		if abs > half || abs == half && (whole/unit)%2 != 0 {
			if rest > 0 {
				s.Payout += unit
			} else {
				s.Payout -= unit
			}
		}
	default:
		return Settlement{}, fmt.Errorf("%w: unknown rounding rule %d", ErrBadMoney, rule)
	}
	s.RoundingDifference = s.Payout + s.CarryOut - s.Gross
	return s, nil
}

// Split divides amount among payees in proportion to weights, exactly:
// each gets the floor of its share, and the nanos left over go one each to
// the payees with the largest remainders (ties to the earlier payee). The
// parts always sum to amount.
func Split(amount Nanos, weights []uint64) ([]Nanos, error) {
	if amount < 0 {
		return nil, fmt.Errorf("%w: split of a negative amount", ErrBadMoney)
	}
	var total uint64
	for _, w := range weights {
		if total+w < total {
			return nil, fmt.Errorf("%w: split weights", ErrOverflow)
		}
		total += w
	}
	if total == 0 {
		return nil, fmt.Errorf("%w: split with no weight", ErrBadMoney)
	}
	parts := make([]Nanos, len(weights))
	rems := make([]uint64, len(weights))
	var given Nanos
	for i, w := range weights {
		q, r, err := (Price{Nanos: w, Per: total}).charge(uint64(amount), 0)
		if err != nil {
			return nil, err
		}
		parts[i], rems[i] = q, r
		given += q
	}
	for left := amount - given; left > 0; left-- {
		best := 0
		for i := range rems {
			if rems[i] > rems[best] {
				best = i
			}
		}
		parts[best]++
		rems[best] = 0
	}
	return parts, nil
}

// ThresholdForFee returns the smallest settlement amount at which a payout
// rail's fee (fixed + basisPoints/10000 of the amount) is at most
// maxBasisPoints of it: settle once the fee is under, say, 2% (200).
func ThresholdForFee(fixed Nanos, basisPoints, maxBasisPoints uint32) (Nanos, error) {
	if fixed < 0 || maxBasisPoints <= basisPoints {
		return 0, fmt.Errorf("%w: a fee of %d bp can never be under %d bp", ErrBadMoney, basisPoints, maxBasisPoints)
	}
	// fixed + A·b/10000 ≤ A·m/10000  ⇔  A ≥ fixed·10000/(m−b), rounded up.
	d := uint64(maxBasisPoints - basisPoints)
	q, r, err := (Price{Nanos: 10000, Per: d}).charge(uint64(fixed), 0)
	if err != nil {
		return 0, err
	}
	if r != 0 {
		if q == math.MaxInt64 {
			return 0, ErrOverflow
		}
		q++
	}
	return q, nil
}
