package metering

import (
	"fmt"
	"math"
	"math/bits"
)

// MaxSpan bounds the time over which one reading's usage is spread: usage
// between readings further apart is spread over the last MaxSpan before
// the newer reading. It bounds the work of pricing one reading.
const MaxSpan = 366 * 24 * 3600 * 1000 // ms

// Usage is the quantity a meter counted between two readings: From is the
// time of the previous reading, To of this one (Unix ms). From == To
// means the usage is placed at one instant.
type Usage struct {
	From, To int64
	Quantity uint64
}

// ChargeState is the pricing state of one (account, meter) under one
// tariff: the usage of the current billing period and, per price band, the
// remainder that did not make a whole nano yet. The zero value is a fresh
// state. A caller stores it (see MarshalBinary) and hands it back with the
// next usage.
type ChargeState struct {
	// Tariff is the fingerprint of the tariff that owns the state.
	Tariff uint64
	// PeriodStart is the start of the billing period Used counts (Unix ms).
	PeriodStart int64
	// Used is the usage of the billing period so far, free units included.
	Used uint64
	// Rem holds, per band, (carried numerator) mod Per: strictly less than
	// the band price's Per.
	Rem [MaxBands]uint64

	// cache is the segment of the last usage priced, so that the next
	// usage in the same segment needs no time-zone arithmetic.
	cache segment
}

// BandCharge is the part of a charge that fell into one price band.
type BandCharge struct {
	Quantity uint64
	Amount   Nanos
}

// Charge is the result of pricing one usage.
type Charge struct {
	// Amount is what the usage is charged: the band amounts plus TopUp.
	Amount Nanos
	// Quantity is the usage priced, Free included.
	Quantity uint64
	// Free is the part of Quantity inside the free allowance.
	Free uint64
	// Bands splits the charge by price band (tiers, then windows).
	Bands [MaxBands]BandCharge
	// TopUp is what was added to reach the tariff's minimum charge.
	TopUp Nanos
}

// Price prices usage u under tariff t, starting from state st, and returns
// the charge and the new state; st itself is not changed, so a caller that
// fails to commit simply keeps the old state.
//
// The rules, in order:
//
//  1. Splitting by time: if u spans a billing-period edge or a
//     time-of-use edge, its quantity is split in proportion to the time on
//     each side, assuming a steady rate between the readings. With D the
//     whole span and c_i the time from From to the end of part i, part i
//     gets floor(Q·c_i/D) − floor(Q·c_(i−1)/D) units, so the parts always
//     add up to Q exactly.
//  2. Each part belongs to one billing period; a new period resets Used.
//     The first Free units of a period are charged nothing.
//  3. A part inside a time-of-use window is priced at the window's price.
//  4. Otherwise it is priced by the tiers, graduated: units are counted
//     against the period's Used, and a part that crosses a tier's up_to is
//     split by quantity at the edge.
//  5. Within each band, the exact amount q·Nanos/Per is added to the
//     band's carried remainder; the whole nanos are charged and the rest
//     stays carried. So the charges of a band always sum to
//     floor(Q_band·Nanos/Per) for the band's total quantity: nothing is
//     lost and nothing is rounded up.
//  6. If the tariff has a minimum charge and some of the usage is past
//     the free allowance, a charge below it is topped up to it (the TopUp
//     is reported apart). Usage entirely inside the free allowance stays
//     free: the minimum never applies to it.
//
// A state that belongs to another tariff (another fingerprint) starts
// afresh: its carried remainders, each under one nano, are dropped.
// Amounts that do not fit are ErrOverflow. Price allocates nothing.
func (t *Tariff) Price(st ChargeState, u Usage) (Charge, ChargeState, error) {
	var ch Charge
	if t.fingerprint == 0 {
		return ch, st, fmt.Errorf("%w: tariff %q was not validated", ErrBadTariff, t.ID)
	}
	if st.Tariff != t.fingerprint {
		st = ChargeState{Tariff: t.fingerprint}
	}
	ch.Quantity = u.Quantity
	from, to := u.From, u.To
	if from > to {
		from = to // the device clock went back: place the usage at To
	}
	if to-from > MaxSpan {
		from = to - MaxSpan
	}
	var err error
	if from == to || u.Quantity == 0 {
		err = t.pricePart(&st, &ch, st.segment(t, to), u.Quantity)
	} else {
		span := uint64(to - from)
		var done uint64
		for at := from; at < to && err == nil; {
			seg := st.segment(t, at)
			end := min(seg.end, to)
			// cumulative share of the quantity up to end: Q·(end−from)/D,
			// exact in 128 bits; (end−from) ≤ D keeps the quotient in range.
			hi, lo := bits.Mul64(u.Quantity, uint64(end-from))
			cum, _ := bits.Div64(hi, lo, span)
			err = t.pricePart(&st, &ch, seg, cum-done)
			done, at = cum, end
		}
	}
	if err != nil {
		return Charge{}, ChargeState{}, err
	}
	if u.Quantity > ch.Free && ch.Amount < t.MinCharge {
		ch.TopUp = t.MinCharge - ch.Amount
		ch.Amount = t.MinCharge
	}
	return ch, st, nil
}

// segment returns the segment holding instant at, from the cache when it
// holds it.
func (st *ChargeState) segment(t *Tariff, at int64) segment {
	if c := st.cache; c.end != 0 && at >= c.from && at < c.end {
		return c
	}
	st.cache = t.segmentAt(at)
	return st.cache
}

// pricePart prices q units that all fall in segment seg.
func (t *Tariff) pricePart(st *ChargeState, ch *Charge, seg segment, q uint64) error {
	if seg.periodStart != st.PeriodStart {
		st.PeriodStart, st.Used = seg.periodStart, 0
	}
	if st.Used < t.Free && q > 0 {
		f := min(q, t.Free-st.Used)
		ch.Free += f
		st.Used += f
		q -= f
	}
	if q == 0 {
		return nil
	}
	if seg.window >= 0 {
		return t.priceBand(st, ch, len(t.Tiers)+int(seg.window), q)
	}
	for i := 0; q > 0; i++ {
		take := q
		if tr := t.Tiers[i]; tr.UpTo != 0 {
			if st.Used >= tr.UpTo {
				continue
			}
			take = min(q, tr.UpTo-st.Used)
		}
		if err := t.priceBand(st, ch, i, take); err != nil {
			return err
		}
		q -= take
	}
	return nil
}

// priceBand charges q units in band b, carrying the band's remainder.
func (t *Tariff) priceBand(st *ChargeState, ch *Charge, b int, q uint64) error {
	amt, rem, err := t.band(b).charge(q, st.Rem[b])
	if err != nil {
		return err
	}
	total, err := ch.Amount.Add(amt)
	if err != nil {
		return err
	}
	st.Rem[b] = rem
	ch.Amount = total
	ch.Bands[b].Quantity += q
	ch.Bands[b].Amount += amt // ≤ total, cannot overflow
	if st.Used > math.MaxUint64-q {
		st.Used = math.MaxUint64
	} else {
		st.Used += q
	}
	return nil
}

// StateAt returns a fresh pricing state in which used units have already
// been counted in the billing period that holds instant at (Unix ms): for
// quoting a usage in the middle of a period.
func (t *Tariff) StateAt(used uint64, at int64) ChargeState {
	st := ChargeState{Tariff: t.fingerprint}
	seg := st.segment(t, at)
	st.PeriodStart, st.Used = seg.periodStart, used
	return st
}
