package metering

import "fmt"

// AccountKind is how an account pays.
type AccountKind uint8

// Account kinds.
const (
	// Prepaid accounts hold a balance that charges debit; a charge that
	// would take it below zero is refused.
	Prepaid AccountKind = iota + 1
	// Postpaid accounts run up a debt, down to minus their credit limit.
	Postpaid
)

func (k AccountKind) String() string {
	switch k {
	case Prepaid:
		return "prepaid"
	case Postpaid:
		return "postpaid"
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Account is who pays for usage. Its balance only ever changes through an
// Entry, so replaying the entries from the opening state rebuilds it.
type Account struct {
	ID       string
	Kind     AccountKind
	Currency Currency
	// Balance: what the account holds (prepaid) or, when negative, owes.
	Balance Nanos
	// CreditLimit is how far below zero a postpaid balance may go (≥ 0).
	CreditLimit Nanos
	// Seq numbers the entries applied, from 1; it makes a replayed or
	// repeated entry detectable.
	Seq uint64
	// Reserved is what open grants hold of the account (≥ 0): not spent,
	// not money moved, but no longer available (see Grant). It changes
	// without an entry; the books keep each grant's part.
	Reserved Nanos
}

// EntryKind is what an entry does to a balance.
type EntryKind uint8

// Entry kinds.
const (
	// EntryCharge debits a charge for usage.
	EntryCharge EntryKind = iota + 1
	// EntryTopUp credits money paid in.
	EntryTopUp
	// EntryAdjust credits (or, negative, debits) a correction by an operator.
	EntryAdjust
)

func (k EntryKind) String() string {
	switch k {
	case EntryCharge:
		return "charge"
	case EntryTopUp:
		return "top_up"
	case EntryAdjust:
		return "adjust"
	}
	return fmt.Sprintf("entry(%d)", k)
}

// Entry is one change to an account: the signed amount added to its
// balance (a charge is negative), numbered by the account's Seq.
type Entry struct {
	Account string
	Seq     uint64
	Kind    EntryKind
	Amount  Nanos // added to Balance
	Time    int64 // Unix ms
	// Ref says what caused it: "device/seq" for a charge, a payment id for
	// a top-up.
	Ref string
}

// Available is what the account can still spend: the balance, plus the
// credit limit when postpaid, less what grants reserved.
func (a Account) Available() (Nanos, error) {
	n := a.Balance
	if a.Kind == Postpaid {
		var err error
		if n, err = n.Add(a.CreditLimit); err != nil {
			return 0, err
		}
	}
	return n.Sub(a.Reserved)
}

// Charge debits amount (≥ 0) of currency c. It returns the entry and the
// new account; a charge the account cannot cover is ErrInsufficientFunds
// and a charge in another currency ErrCurrencyMismatch, and then the
// account is unchanged.
func (a Account) Charge(m Money, timeMs int64, ref string) (Entry, Account, error) {
	if m.Nanos < 0 {
		return Entry{}, a, fmt.Errorf("%w: negative charge %s", ErrBadMoney, m)
	}
	if m.Currency != a.Currency {
		return Entry{}, a, fmt.Errorf("%w: account %q is in %s, the charge in %s", ErrCurrencyMismatch, a.ID, a.Currency, m.Currency)
	}
	avail, err := a.Available()
	if err != nil {
		return Entry{}, a, err
	}
	if m.Nanos > avail {
		return Entry{}, a, fmt.Errorf("%w: account %q can spend %s, the charge is %s", ErrInsufficientFunds, a.ID, Money{avail, a.Currency}, m)
	}
	return a.apply(Entry{Kind: EntryCharge, Amount: -m.Nanos, Time: timeMs, Ref: ref})
}

// TopUp credits amount (> 0).
func (a Account) TopUp(m Money, timeMs int64, ref string) (Entry, Account, error) {
	if m.Nanos <= 0 {
		return Entry{}, a, fmt.Errorf("%w: a top-up must be positive, got %s", ErrBadMoney, m)
	}
	if m.Currency != a.Currency {
		return Entry{}, a, fmt.Errorf("%w: account %q is in %s, the top-up in %s", ErrCurrencyMismatch, a.ID, a.Currency, m.Currency)
	}
	return a.apply(Entry{Kind: EntryTopUp, Amount: m.Nanos, Time: timeMs, Ref: ref})
}

// Adjust adds amount (a credit; negative, a debit; never zero): an
// operator's correction. A debit is not bounded by what the account can
// spend — it corrects money granted by mistake, and the account owes it —
// so it may leave a balance below zero (or past a postpaid credit limit),
// and the account then spends nothing until it is paid.
func (a Account) Adjust(m Money, timeMs int64, ref string) (Entry, Account, error) {
	if m.Nanos == 0 {
		return Entry{}, a, fmt.Errorf("%w: an adjustment of zero", ErrBadMoney)
	}
	if m.Currency != a.Currency {
		return Entry{}, a, fmt.Errorf("%w: account %q is in %s, the adjustment in %s", ErrCurrencyMismatch, a.ID, a.Currency, m.Currency)
	}
	return a.apply(Entry{Kind: EntryAdjust, Amount: m.Nanos, Time: timeMs, Ref: ref})
}

// apply numbers e and adds it to the balance.
func (a Account) apply(e Entry) (Entry, Account, error) {
	b, err := a.Balance.Add(e.Amount)
	if err != nil {
		return Entry{}, a, err
	}
	e.Account, e.Seq = a.ID, a.Seq+1
	a.Balance, a.Seq = b, e.Seq
	return e, a, nil
}

// Replay applies entries in order to the opening state and returns the
// account they lead to. Entries must be the account's, numbered on from
// the opening Seq without gaps: a missing, repeated or foreign entry is an
// error, so replay proves the history is whole.
func Replay(opening Account, entries []Entry) (Account, error) {
	a := opening
	for _, e := range entries {
		if e.Account != a.ID {
			return opening, fmt.Errorf("%w: entry %d is for account %q, not %q", ErrBadState, e.Seq, e.Account, a.ID)
		}
		if e.Seq != a.Seq+1 {
			return opening, fmt.Errorf("%w: account %q: entry %d follows %d", ErrBadState, a.ID, e.Seq, a.Seq)
		}
		b, err := a.Balance.Add(e.Amount)
		if err != nil {
			return opening, err
		}
		a.Balance, a.Seq = b, e.Seq
	}
	return a, nil
}
