package metering

import (
	"fmt"
	"hash/fnv"
	"time"
)

// Limits of a tariff, so that pricing state has a fixed size.
const (
	// MaxTiers is the most graduated tiers a tariff has.
	MaxTiers = 8
	// MaxWindows is the most time-of-use windows a tariff has.
	MaxWindows = 8
	// MaxBands is the number of price bands: tiers then windows.
	MaxBands = MaxTiers + MaxWindows
)

// Period is the billing period over which tiers and the free allowance
// count usage. Periods start at local midnight in the tariff's time zone.
type Period uint8

// Billing periods.
const (
	PeriodNone  Period = iota // usage is never reset: tiers count lifetime usage
	PeriodDay                 // from local midnight
	PeriodWeek                // from Monday, local midnight
	PeriodMonth               // from the 1st, local midnight
	PeriodYear                // from January 1st, local midnight
)

var periodNames = [...]string{"none", "day", "week", "month", "year"}

func (p Period) String() string {
	if int(p) < len(periodNames) {
		return periodNames[p]
	}
	return fmt.Sprintf("period(%d)", p)
}

// Tier is one step of a graduated price: usage of the billing period up to
// and including UpTo units is priced at Price; the last tier has UpTo 0 and
// no limit.
type Tier struct {
	UpTo  uint64
	Price Price
}

// TimeOfUse is a time-of-use window: on the given weekdays, from From to To
// (minutes after local midnight, From < To ≤ 1440), usage is priced at
// Price instead of the tier price. Windows are in local wall-clock time of
// the tariff's zone, so "17:00–21:00" stays 17:00–21:00 across daylight
// saving changes.
type TimeOfUse struct {
	Name     string
	Weekdays uint8 // bit d set: applies on time.Weekday(d)
	From, To uint16
	Price    Price
}

// Tariff prices one meter's usage. Its zero value is not valid; build one
// with the fields below and call Validate, or load a file with
// ParseTariffs. A Tariff must not change after Validate.
type Tariff struct {
	ID       string
	Currency Currency
	Unit     string // the meter's base unit, for people: "Wh", "byte", "ms"
	Period   Period
	Location *time.Location
	// Free units per billing period, charged nothing. They are the first
	// units of the period: tiers count them, windows do not apply to them.
	Free uint64
	// Tiers, ascending by UpTo; the last has UpTo 0. A flat price is one tier.
	Tiers []Tier
	// Windows override the tier price while they are open.
	Windows []TimeOfUse
	// MinCharge, if not zero, is the least a ticket with usage is charged.
	MinCharge Nanos
	// Rules are the plausibility rules of every meter the tariff prices
	// (a device may give a meter its own). They are not part of the
	// price: changing them keeps the pricing state.
	Rules Rules

	fingerprint uint64
}

// Validate checks the tariff and fixes its fingerprint. Errors wrap
// ErrBadTariff and name the field at fault.
func (t *Tariff) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: tariff %q: %s", ErrBadTariff, t.ID, fmt.Sprintf(format, args...))
	}
	if t.ID == "" {
		return bad("id is empty")
	}
	if !t.Currency.Valid() {
		return bad("currency %q is not a three-letter ISO 4217 code", t.Currency)
	}
	if t.Location == nil {
		return bad("time zone is not set")
	}
	if t.Period > PeriodYear {
		return bad("unknown period %d", t.Period)
	}
	if len(t.Tiers) == 0 {
		return bad("no price: give a price or tiers")
	}
	if len(t.Tiers) > MaxTiers {
		return bad("%d tiers; at most %d", len(t.Tiers), MaxTiers)
	}
	for i, tr := range t.Tiers {
		if !tr.Price.Valid() {
			return bad("tier %d: price per 0 units", i+1)
		}
		last := i == len(t.Tiers)-1
		switch {
		case last && tr.UpTo != 0:
			return bad("tier %d: the last tier must have no up_to limit", i+1)
		case !last && tr.UpTo == 0:
			return bad("tier %d: only the last tier may be unlimited", i+1)
		case i > 0 && !last && tr.UpTo <= t.Tiers[i-1].UpTo:
			return bad("tiers %d and %d overlap: up_to %d is not above %d", i, i+1, tr.UpTo, t.Tiers[i-1].UpTo)
		}
	}
	if len(t.Windows) > MaxWindows {
		return bad("%d time-of-use windows; at most %d", len(t.Windows), MaxWindows)
	}
	for i, w := range t.Windows {
		if !w.Price.Valid() {
			return bad("window %q: price per 0 units", w.Name)
		}
		if w.From >= w.To || w.To > 24*60 {
			return bad("window %q: from %s must be before to %s, within one day", w.Name, hhmm(w.From), hhmm(w.To))
		}
		if w.Weekdays == 0 || w.Weekdays >= 1<<7 {
			return bad("window %q: no weekdays", w.Name)
		}
		for _, o := range t.Windows[:i] {
			if o.Weekdays&w.Weekdays != 0 && o.From < w.To && w.From < o.To {
				return bad("windows %q and %q overlap", o.Name, w.Name)
			}
		}
	}
	if t.MinCharge < 0 {
		return bad("negative minimum charge")
	}
	t.fingerprint = t.computeFingerprint()
	return nil
}

// computeFingerprint hashes everything that decides a price band, so that
// cached pricing state of an edited tariff is recognised as stale.
func (t *Tariff) computeFingerprint() uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%s|%d|%s|%d|", t.ID, t.Currency, t.Period, t.Location.String(), t.Free)
	for _, tr := range t.Tiers {
		fmt.Fprintf(h, "t%d:%d/%d|", tr.UpTo, tr.Price.Nanos, tr.Price.Per)
	}
	for _, w := range t.Windows {
		fmt.Fprintf(h, "w%d:%d-%d:%d/%d|", w.Weekdays, w.From, w.To, w.Price.Nanos, w.Price.Per)
	}
	if f := h.Sum64(); f != 0 {
		return f
	}
	return 1
}

// PeriodOf returns the start (Unix ms) of the billing period that
// contains at; 0 for a tariff without periods.
func (t *Tariff) PeriodOf(at int64) int64 { return t.segmentAt(at).periodStart }

// band returns the price of band b: tiers first, then windows.
func (t *Tariff) band(b int) Price {
	if b < len(t.Tiers) {
		return t.Tiers[b].Price
	}
	return t.Windows[b-len(t.Tiers)].Price
}

// BandName names band b for people: "tier 1", "window peak".
func (t *Tariff) BandName(b int) string {
	if b < len(t.Tiers) {
		return fmt.Sprintf("tier %d", b+1)
	}
	return "window " + t.Windows[b-len(t.Tiers)].Name
}

// BandPrice returns the price of band b.
func (t *Tariff) BandPrice(b int) Price { return t.band(b) }

func hhmm(m uint16) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }
