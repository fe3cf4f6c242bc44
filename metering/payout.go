package metering

import "fmt"

// PlatformFee is what a platform keeps of a payout: basis points of the
// gross plus a fixed part, at most Cap (0: no cap). It is charged in
// nanos, rounded down.
type PlatformFee struct {
	BasisPoints uint32
	Fixed       Nanos
	Cap         Nanos
}

// Of returns the fee on gross (never more than gross, never negative).
func (f PlatformFee) Of(gross Nanos) (Nanos, error) {
	if gross <= 0 {
		return 0, nil
	}
	share, _, err := (Price{Nanos: uint64(f.BasisPoints), Per: 10000}).charge(uint64(gross), 0)
	if err != nil {
		return 0, err
	}
	fee, err := share.Add(f.Fixed)
	if err != nil {
		return 0, err
	}
	if f.Cap > 0 && fee > f.Cap {
		fee = f.Cap
	}
	return min(max(fee, 0), gross), nil
}

// PayoutSplit is one payout's money: Gross = Fee + Σ Payees + CarryOut, to
// the nano. Every payee's amount is whole minor units of the currency.
type PayoutSplit struct {
	Gross    Nanos
	Fee      Nanos
	Payees   []Nanos // in the order of the weights
	CarryOut Nanos   // under one minor unit of the net, owed to the next payout
}

// SplitPayout pays out fresh (the money new to the wallet since its last
// payout) plus carry (what that payout carried): the platform fee on fresh
// only — carried money is net already, its fee was taken when it first
// came — then the rest in whole minor units of cur among the payees by
// weight (Split, so the shares add up exactly), the remainder under one
// minor unit carried. A gross of zero or less pays nothing and carries all
// of it (a negative balance is carried, never paid); the fee is never more
// than the gross.
func SplitPayout(fresh, carry Nanos, cur Currency, fee PlatformFee, weights []uint64) (PayoutSplit, error) {
	gross, err := fresh.Add(carry)
	if err != nil {
		return PayoutSplit{}, fmt.Errorf("payout: %w", err)
	}
	s := PayoutSplit{Gross: gross, Payees: make([]Nanos, len(weights))}
	if gross <= 0 {
		s.CarryOut = gross
		return s, nil
	}
	if s.Fee, err = fee.Of(fresh); err != nil {
		return s, err
	}
	s.Fee = min(s.Fee, gross)
	net := gross - s.Fee
	unit := cur.MinorUnit()
	units := net / unit
	parts, err := Split(units, weights)
	if err != nil {
		return s, fmt.Errorf("payout: %w", err)
	}
	var paid Nanos
	for i, p := range parts {
		s.Payees[i] = p * unit
		paid += s.Payees[i]
	}
	s.CarryOut = net - paid
	return s, nil
}
