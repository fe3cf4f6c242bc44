package ledger

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
)

// ErrInvariant: a check the books make before they write found a
// contradiction. The write is refused and, wrapped with store.ErrAbort,
// the whole batch is rolled back: nothing of it reaches the disk, every
// message in it is answered retry later, and the error is logged.
var ErrInvariant = errors.New("ledger: invariant broken")

// broken returns the error of a failed invariant check.
func broken(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", store.ErrAbort, ErrInvariant, fmt.Sprintf(format, args...))
}

// The books' invariants, checked before every write of a ticket's effects
// (checkEffects) and of every item a window takes (checkWindowAdd):
//
//   - aggregate seqs follow on: the aggregates sealed take the seqs right
//     after the last one in the file, one each, in order;
//   - a balance changes by its entry, and only by it: the account's
//     balance after is its balance before plus the entry's amount (no
//     entry, no change);
//   - a window keeps what it is given: what a window key held and the item
//     added to it equal what it holds after plus what it sealed and what
//     went out as a correction — in amount, quantity and tickets.

// checkEffects checks an accepted ticket's effects against the books as
// they are in tx's view: lastSeq is the file's last aggregate seq.
func checkEffects(eff *ticketEffects, lastSeq uint64) error {
	if err := checkSeals(lastSeq, eff.seals, eff.aggSeq); err != nil {
		return err
	}
	if g := eff.grant; g != nil {
		if err := g.Check(); err != nil {
			return broken("%v", err)
		}
		if eff.account.Reserved != eff.reservedBefore-eff.paid {
			return broken("account %s: reserved %d after, want %d less the %d its grant paid", eff.account.ID, eff.account.Reserved, eff.reservedBefore, eff.paid)
		}
	} else if eff.account.Reserved != eff.reservedBefore {
		return broken("account %s: reserved %d after a ticket under no grant, %d before", eff.account.ID, eff.account.Reserved, eff.reservedBefore)
	}
	return checkBalance(eff.account, eff.balanceBefore, eff.entry)
}

// checkGrant checks a grant and its account before they are written: the
// grant adds up (metering.Grant.Check), the account's balance is
// untouched (a reservation moves no money), and its reservation moved by
// exactly what the grant's did since oldReserved.
func checkGrant(g *metering.Grant, oldReserved metering.Nanos, before, after metering.Account) error {
	if err := g.Check(); err != nil {
		return broken("%v", err)
	}
	switch {
	case after.Balance != before.Balance || after.Seq != before.Seq:
		return broken("account %s: a grant changed its balance", after.ID)
	case after.Reserved < 0:
		return broken("account %s reserves %d", after.ID, after.Reserved)
	case after.Reserved-before.Reserved != g.Reserved-oldReserved:
		return broken("account %s: reserved %d → %d, its grant %d: %d → %d", after.ID, before.Reserved, after.Reserved, g.ID, oldReserved, g.Reserved)
	}
	return nil
}

// checkBalance checks that account a's balance is its balance before
// plus the entry's amount (no entry: unchanged).
func checkBalance(a metering.Account, before metering.Nanos, e *metering.Entry) error {
	want := before
	if e != nil {
		var err error
		if want, err = want.Add(e.Amount); err != nil {
			return broken("account %s: balance %d plus entry %d overflows", a.ID, before, e.Amount)
		}
	}
	if a.Balance != want {
		return broken("account %s: balance %d after, want %d (before %d and its entry)", a.ID, a.Balance, want, before)
	}
	return nil
}

// checkSeals checks that seals take the seqs after last, one each, and
// that aggSeq is the last of them (last when there are none).
func checkSeals(last uint64, seals []seal, aggSeq uint64) error {
	for i, s := range seals {
		if s.seq != last+uint64(i)+1 {
			return broken("aggregate %d of %d sealed as seq %d, want %d (the file's last is %d)", i+1, len(seals), s.seq, last+uint64(i)+1, last)
		}
	}
	if want := last + uint64(len(seals)); aggSeq != want {
		return broken("last aggregate seq %d after %d seals, want %d", aggSeq, len(seals), want)
	}
	return nil
}

// checkWindowAdd checks that adding it to a window key in state before
// kept everything it was given: before's open window and the item equal
// the open window after, the windows sealed and the correction, in
// amount, quantity and tickets.
func checkWindowAdd(before metering.WindowState, it metering.Item, d metering.Decision) error {
	in := totals{}.add(before.Open.Amount, before.Open.Quantity, before.Open.Tickets).add(it.Amount, it.Quantity, 1)
	out := totals{}.add(d.State.Open.Amount, d.State.Open.Quantity, d.State.Open.Tickets)
	for _, s := range d.Sealed {
		out = out.add(s.Amount, s.Quantity, s.Tickets)
	}
	if c := d.Correction; c != nil {
		out = out.add(c.Item.Amount, c.Item.Quantity, 1)
	}
	if !in.equal(out) {
		return broken("window: %s held and added, %s held, sealed and corrected after", in, out)
	}
	return nil
}

// totals adds amounts, quantities and tickets as 128-bit sums, so no
// sum overflows; a negative amount (a window never holds one) makes the
// totals unequal to any other.
type totals struct {
	amount, quantity, tickets [2]uint64 // high, low
	negative                  bool
}

func add128(s [2]uint64, v uint64) [2]uint64 {
	lo, carry := bits.Add64(s[1], v, 0)
	return [2]uint64{s[0] + carry, lo}
}

func (t totals) add(amount metering.Nanos, quantity, tickets uint64) totals {
	if amount < 0 {
		t.negative = true
	} else {
		t.amount = add128(t.amount, uint64(amount))
	}
	t.quantity = add128(t.quantity, quantity)
	t.tickets = add128(t.tickets, tickets)
	return t
}

func (t totals) equal(u totals) bool { return !t.negative && !u.negative && t == u }

func (t totals) String() string {
	s := func(v [2]uint64) string {
		if v[0] == 0 {
			return strconv.FormatUint(v[1], 10)
		}
		return fmt.Sprintf("%d·2^64+%d", v[0], v[1])
	}
	neg := ""
	if t.negative {
		neg = " (with a negative amount)"
	}
	return s(t.amount) + " nanos" + neg + ", " + s(t.quantity) + " units, " + s(t.tickets) + " tickets"
}
