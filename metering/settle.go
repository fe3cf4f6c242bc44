package metering

import (
	"fmt"
	"math"
)

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
