package provider

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// StatementLine is what one account was charged by one provider on one
// meter in one price band over a statement's period: what a postpaid
// account is invoiced. Tickets and Aggregates count those that charged
// something in the band (a ticket across a tier edge counts in both).
type StatementLine struct {
	Account  string `json:"account"`
	Provider string `json:"provider"`
	Meter    string `json:"meter"`
	// Band is the price band ("tier 1", "window peak", "free", "minimum"),
	// or "unsplit" for aggregates that do not list bands.
	Band     string         `json:"band"`
	Currency string         `json:"currency"`
	Quantity uint64         `json:"quantity"` // the meter's base units
	Amount   metering.Nanos `json:"amount_nanos"`
	// Minor is Amount in minor units of the currency, exactly (cents with a
	// decimal fraction for EUR): the statement does not round; an invoice
	// rounds its total once, by the money rules.
	Minor       string `json:"amount_minor_units"`
	Tickets     uint64 `json:"tickets"`
	Aggregates  uint64 `json:"aggregates"`
	Corrections uint64 `json:"corrections"` // of Aggregates, the corrections of earlier windows
}

// Statement lists what each account (or only account, if it is not "")
// was charged over [from, to): every aggregate booked whose window starts
// in the period, corrections included, summed by account, provider,
// meter, band and currency, in that order. Aggregates held for review are not
// booked and so not charged.
func (r *Receiver) Statement(account string, from, to time.Time) ([]StatementLine, error) {
	lo, hi := uint64(max(from.UnixMilli(), 0)), uint64(max(to.UnixMilli(), 0))
	lines := map[[5]string]*StatementLine{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	err := r.books.EachBooked(ctx, func(v []byte) error {
		_, a, err := strict.DecodeAggregate(v)
		if err != nil || a.WindowStart < lo || a.WindowStart >= hi || (account != "" && a.Account != account) {
			return nil // a credit, or outside the statement
		}
		bands := a.Bands
		if len(bands) == 0 {
			bands = []protocol.AggregateBand{{Band: metering.BandUnsplit, Quantity: a.Quantity, Amount: a.Amount}}
		}
		for _, b := range bands {
			k := [5]string{a.Account, a.Provider, a.Meter, b.Band, a.Currency}
			l := lines[k]
			if l == nil {
				l = &StatementLine{Account: a.Account, Provider: a.Provider, Meter: a.Meter, Band: b.Band, Currency: a.Currency}
				lines[k] = l
			}
			var ok bool
			if l.Quantity, ok = addU64(l.Quantity, b.Quantity); !ok {
				return fmt.Errorf("statement: quantity of %s/%s/%s overflows", a.Account, a.Provider, a.Meter)
			}
			if b.Amount > uint64(math.MaxInt64) {
				return fmt.Errorf("statement: amount of %s/%s/%s overflows", a.Account, a.Provider, a.Meter)
			}
			if l.Amount, err = l.Amount.Add(metering.Nanos(b.Amount)); err != nil {
				return fmt.Errorf("statement: amount of %s/%s/%s: %w", a.Account, a.Provider, a.Meter, err)
			}
			l.Tickets += a.Tickets
			l.Aggregates++
			if a.Corrects != 0 {
				l.Corrections++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]StatementLine, 0, len(lines))
	for _, l := range lines {
		l.Minor = metering.Currency(l.Currency).InMinorUnits(l.Amount)
		out = append(out, *l)
	}
	slices.SortFunc(out, func(a, b StatementLine) int {
		return cmp.Or(strings.Compare(a.Account, b.Account), strings.Compare(a.Provider, b.Provider),
			strings.Compare(a.Meter, b.Meter), strings.Compare(a.Band, b.Band), strings.Compare(a.Currency, b.Currency))
	})
	return out, nil
}
