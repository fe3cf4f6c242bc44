package metering

import (
	"fmt"
	"math/bits"
	"time"
)

// Reservations (3GPP converged charging with unit reservation, at the
// edge): before it serves, a device is granted units of one meter; the
// price of those units at the tariff in force is reserved on the account
// (its available balance falls, its balance does not); the usage under
// the grant is charged against the reservation; what is left is released
// when the device releases the grant, at its expiry, or after its idle
// timeout. A reservation moves no money: only charges do.
//
// Invariants, checked by the books before they write:
//   - an account's Reserved is the sum of its open grants' Reserved;
//   - a grant's Reserved is never negative, and a closed grant's is 0;
//   - Reserved falls only by a charge under the grant (what it paid) or
//     by a release (what it gave back): Reserved at open + extensions =
//     Paid + Released + Reserved.

// GrantTerms are the rules grants are made by. The zero value takes the
// defaults shown.
type GrantTerms struct {
	// Validity is how long a grant lasts from its last request; default 15m.
	Validity time.Duration
	// Idle releases a grant after this long without a ticket under it;
	// default 5m.
	Idle time.Duration
	// ThresholdPercent: a device asks again once this share of the units
	// last granted is left; default 20.
	ThresholdPercent uint64
	// Continue is the final-unit action: false stops a device at its
	// grant's limit, true lets it go on Grace units past it while the
	// gateway is out of reach (charged as far as funds go).
	Continue bool
	Grace    uint64
	// MaxUnits bounds the units one request is granted; 0 is no bound
	// beyond the funds and the meter's plausibility rules.
	MaxUnits uint64
}

// WithDefaults returns t with its zero fields set to their defaults.
func (t GrantTerms) WithDefaults() GrantTerms {
	if t.Validity <= 0 {
		t.Validity = 15 * time.Minute
	}
	if t.Idle <= 0 {
		t.Idle = 5 * time.Minute
	}
	if t.ThresholdPercent == 0 || t.ThresholdPercent > 100 {
		t.ThresholdPercent = 20
	}
	if !t.Continue {
		t.Grace = 0
	}
	return t
}

// GrantState says whether a grant is open, or why it closed (the values
// of protocol.GrantClosed).
type GrantState uint8

// Grant states.
const (
	GrantOpen GrantState = iota
	GrantReleased
	GrantExpired
	GrantIdle
)

func (s GrantState) String() string {
	return [...]string{"open", "released", "expired", "idle"}[min(int(s), 3)]
}

// Grant is one device's reservation on one meter: what it may serve (up
// to the register Limit), what is reserved for it, and what it used.
type Grant struct {
	ID      uint64 // the request id that opened it
	Request uint64 // the last request id answered under it
	Device  string
	Account string
	Meter   string
	Epoch   uint64 // register epoch of Limit and Threshold
	// Limit is the register the device may serve up to; Threshold the
	// register at which it asks again.
	Limit, Threshold uint64
	Granted          uint64 // units granted in all
	Reserved         Nanos  // still reserved
	Held             Nanos  // reserved in all (at opening and every extension)
	Used             uint64 // units charged under it
	Paid             Nanos  // charged from the reservation
	Charged          Nanos  // charged in all under it (Paid and from the available balance)
	Opened           int64  // Unix ms
	Expiry           int64  // Unix ms
	LastUse          int64  // Unix ms of the last request or ticket under it
	Idle             int64  // ms
	Continue         bool
	Grace            uint64
	State            GrantState
	Closed           int64 // Unix ms; 0 while open
	Released         Nanos // given back when it closed
}

// Open reports whether the grant still reserves.
func (g *Grant) Open() bool { return g.State == GrantOpen }

// Over is how many units were charged under the grant past what it
// granted (a device that did not stop at its limit).
func (g *Grant) Over() uint64 {
	if g.Used > g.Granted {
		return g.Used - g.Granted
	}
	return 0
}

// Quote is the price of q units of usage at now, from pricing state st:
// what a grant of q units reserves. It is what the same usage in one
// ticket would be charged; usage spread over several tickets is charged
// the same (remainders carry), except for a tariff's minimum charge per
// ticket or a time-of-use boundary crossed, whose difference comes from
// the available balance.
func (t *Tariff) Quote(st ChargeState, q uint64, now int64) (Nanos, error) {
	ch, _, err := t.Price(st, Usage{From: now, To: now, Quantity: q})
	return ch.Amount, err
}

// UnitsFor is the most units (at most max) whose Quote is within amount:
// a grant asked for in money. Price rises with the quantity, so a binary
// search finds it.
func (t *Tariff) UnitsFor(st ChargeState, amount Nanos, max uint64, now int64) (uint64, error) {
	lo, hi := uint64(0), max
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		p, err := t.Quote(st, mid, now)
		if err != nil || p > amount {
			hi = mid - 1
			continue
		}
		lo = mid
	}
	return lo, nil
}

// Reserve takes n (> 0) out of what the account can spend, for a grant.
// A reservation past what it has available is ErrInsufficientFunds, and
// the account is unchanged.
func (a Account) Reserve(n Nanos) (Account, error) {
	avail, err := a.Available()
	if err != nil {
		return a, err
	}
	if n <= 0 || n > avail {
		return a, fmt.Errorf("%w: account %q can reserve %s, the grant needs %s", ErrInsufficientFunds, a.ID, Money{avail, a.Currency}, Money{n, a.Currency})
	}
	r, err := a.Reserved.Add(n)
	if err != nil {
		return a, err
	}
	a.Reserved = r
	return a, nil
}

// Unreserve gives n (0 ≤ n ≤ Reserved) back to what the account can spend.
func (a Account) Unreserve(n Nanos) (Account, error) {
	if n < 0 || n > a.Reserved {
		return a, fmt.Errorf("%w: account %q reserves %d, cannot give back %d", ErrBadState, a.ID, a.Reserved, n)
	}
	a.Reserved -= n
	return a, nil
}

// ChargeGrant debits m for usage under a grant: cover (at most what the
// grant still reserves; the part of m for the grant's meter) comes out of
// the reservation, the rest of m out of what the account has available.
// It returns the entry, the account and what the reservation paid; a
// charge the two do not cover is ErrInsufficientFunds and nothing
// changes.
func (a Account) ChargeGrant(m Money, cover Nanos, timeMs int64, ref string) (Entry, Account, Nanos, error) {
	paid := max(min(m.Nanos, cover, a.Reserved), 0)
	b, err := a.Unreserve(paid)
	if err != nil {
		return Entry{}, a, 0, err
	}
	e, b, err := b.Charge(m, timeMs, ref)
	if err != nil {
		return Entry{}, a, 0, err
	}
	return e, b, paid, nil
}

// Spend records a charge of amount for units under g, paid of it from the
// reservation, at now.
func (g Grant) Spend(units uint64, amount, paid Nanos, now int64) (Grant, error) {
	var err error
	if paid > g.Reserved || paid < 0 {
		return g, fmt.Errorf("%w: grant %d reserves %d, pays %d", ErrBadState, g.ID, g.Reserved, paid)
	}
	g.Reserved -= paid
	if g.Paid, err = g.Paid.Add(paid); err != nil {
		return g, err
	}
	if g.Charged, err = g.Charged.Add(amount); err != nil {
		return g, err
	}
	u, carry := bits.Add64(g.Used, units, 0)
	if carry != 0 {
		return g, fmt.Errorf("%w: grant %d: units used", ErrOverflow, g.ID)
	}
	g.Used, g.LastUse = u, now
	return g, nil
}

// Close ends g for reason s at now and returns what it gives back.
func (g Grant) Close(s GrantState, now int64) (Grant, Nanos) {
	n := g.Reserved
	g.State, g.Closed, g.Released, g.Reserved = s, now, n, 0
	return g, n
}

// Due says whether an open grant is due to close at now, and why: its
// validity ended, or nothing was used under it for its idle timeout.
func (g *Grant) Due(now int64) GrantState {
	switch {
	case !g.Open():
		return g.State
	case now >= g.Expiry:
		return GrantExpired
	case now-g.LastUse >= g.Idle:
		return GrantIdle
	}
	return GrantOpen
}

// Extend grants units more, for amount reserved, at now, to a device
// whose register is at register (in epoch): the limit rises by units
// from where the device stands (the old limit, or its register when that
// is past it), the threshold is set by the terms, and the validity starts
// again.
func (g Grant) Extend(register, units uint64, amount Nanos, now int64, t GrantTerms) (Grant, error) {
	var err error
	base := max(g.Limit, register)
	lim, carry := bits.Add64(base, units, 0)
	if carry != 0 {
		return g, fmt.Errorf("%w: a grant's limit", ErrOverflow)
	}
	if g.Reserved, err = g.Reserved.Add(amount); err != nil {
		return g, err
	}
	if g.Held, err = g.Held.Add(amount); err != nil {
		return g, err
	}
	g.Granted += units
	if g.Opened == 0 {
		g.Opened = now
	}
	g.Limit = lim
	hi, lo := bits.Mul64(units, t.ThresholdPercent)
	left, _ := bits.Div64(hi, lo, 100)
	g.Threshold = lim - left
	g.Expiry, g.LastUse, g.Idle = now+t.Validity.Milliseconds(), now, t.Idle.Milliseconds()
	g.Continue, g.Grace = t.Continue, t.Grace
	return g, nil
}

// Check holds g to its invariants: what it reserved in all is what it
// paid, gave back and still reserves; a closed grant reserves nothing.
func (g *Grant) Check() error {
	sum, err := g.Paid.Add(g.Released)
	if err == nil {
		sum, err = sum.Add(g.Reserved)
	}
	switch {
	case err != nil:
		return err
	case g.Reserved < 0 || g.Paid < 0 || g.Released < 0:
		return fmt.Errorf("%w: grant %d: a negative part", ErrBadState, g.ID)
	case sum != g.Held:
		return fmt.Errorf("%w: grant %d: paid %d + released %d + reserved %d ≠ held %d", ErrBadState, g.ID, g.Paid, g.Released, g.Reserved, g.Held)
	case !g.Open() && g.Reserved != 0:
		return fmt.Errorf("%w: grant %d is %s and still reserves %d", ErrBadState, g.ID, g.State, g.Reserved)
	case g.Threshold > g.Limit:
		return fmt.Errorf("%w: grant %d: threshold above limit", ErrBadState, g.ID)
	}
	return nil
}
