package metering

import "fmt"

// WindowKey names one stream of aggregates: what one account owes one
// provider for one meter.
type WindowKey struct {
	Provider, Account, Meter string
}

// Window is an aggregation window being filled: the totals of the tickets
// whose usage time falls in its slot of the policy's length. [Start, End)
// is the part of the slot the window stands for: the whole slot, or, once a
// threshold closed a part of the slot early, the rest of it after that part.
// Start identifies the window within its key: the parts of one slot have
// distinct, increasing starts.
type Window struct {
	Start, End int64 // Unix ms
	Currency   Currency
	Quantity   uint64
	Amount     Nanos
	Tickets    uint64
	Tree       Frontier
	// Bands splits Quantity and Amount by price band, sorted by name
	// (items without bands add to the totals only).
	Bands []BandPart
	// Proven is the part of Quantity that payword chains prove (the sum
	// of the items' Proven): what the window's chain progress records must
	// add up to. Proven <= Quantity.
	Proven uint64
	// Tariff is the tariff version that priced every item ("" without
	// versions, or in a fold of late items priced by several).
	Tariff string
}

// WindowState is the aggregation state of one WindowKey.
type WindowState struct {
	// Floor: every usage time before it belongs to a slot whose time
	// passed; an item from before it is a correction. Only the end of a
	// slot moves it, never a threshold: devices' clocks differ, and an item
	// a little behind the one that crossed the threshold is not late.
	Floor int64
	// Open is the window being filled; Open.End == 0 when there is none.
	// Then Open.Start, if not 0, is where a threshold closed the previous
	// part of the current slot: the next part starts there.
	Open Window
}

// Policy is a provider's settlement policy: when its windows close.
type Policy struct {
	// Length of a window in ms. Windows are aligned to multiples of Length
	// since the Unix epoch (hourly windows start on the hour, UTC).
	Length int64
	// Threshold closes a window early, at the item that makes its amount
	// reach it: the provider is paid when the IOUs add up. 0: never early.
	// The rest of the slot goes on in a new window (the slot's next part),
	// which also takes the slot's items that arrive later but carry an
	// earlier time.
	Threshold Nanos
}

// Validate checks the policy.
func (p Policy) Validate() error {
	if p.Length <= 0 {
		return fmt.Errorf("%w: window length must be positive", ErrBadTariff)
	}
	if p.Threshold < 0 {
		return fmt.Errorf("%w: negative settlement threshold", ErrBadTariff)
	}
	return nil
}

// Item is one ticket's contribution to a window.
type Item struct {
	Time     int64 // usage time: the ticket's time, Unix ms
	Quantity uint64
	Amount   Nanos
	Ticket   Hash // TicketHash of the ticket bytes
	// Bands splits the item by price band (Charge.Parts); nil if unknown.
	Bands []BandPart
	// Proven is the part of Quantity a payword chain proves: all of it for
	// a payword ticket, 0 for any other. Proven <= Quantity.
	Proven uint64
	// Tariff is the tariff version that priced the item ("" without
	// versions). A window holds the items of one version: an item of
	// another closes the window's part (SealedByTariff).
	Tariff string
}

// SealReason says why a window closed.
type SealReason uint8

// Seal reasons.
const (
	SealedByTime      SealReason = iota + 1 // its end time passed
	SealedByThreshold                       // its amount reached the threshold
	SealedByTariff                          // an item of another tariff version came
)

func (r SealReason) String() string {
	switch r {
	case SealedByTime:
		return "time"
	case SealedByThreshold:
		return "threshold"
	case SealedByTariff:
		return "tariff"
	}
	return fmt.Sprintf("reason(%d)", r)
}

// Sealed is a closed window's totals and Merkle root: what becomes an
// aggregate for the provider.
type Sealed struct {
	Start, End int64
	Currency   Currency
	Quantity   uint64
	Amount     Nanos
	Tickets    uint64
	Root       Hash
	Reason     SealReason
	// Bands: the window's bands, completed (CompleteBands) so that they
	// add up to Quantity and Amount; nil when the window has none.
	Bands []BandPart
	// Proven is the window's Proven.
	Proven uint64
	// Tariff is the window's Tariff.
	Tariff string
}

// Correction is an item whose usage time falls in a window that is already
// sealed. It is never dropped and never moved into the open window: the
// caller issues it as a correction of the sealed aggregate of the slot
// [SlotStart, SlotEnd) that holds its time.
type Correction struct {
	SlotStart, SlotEnd int64
	Item               Item
}

// Decision is what adding one item did.
type Decision struct {
	State WindowState
	// Sealed lists the windows closed, oldest first (at most two: the open
	// window that the item's time passed, and the new one that reached the
	// threshold).
	Sealed []Sealed
	// Correction is set, and nothing else changed, when the item belongs to
	// a sealed window.
	Correction *Correction
}

// slot returns the aligned slot that holds t.
func (p Policy) slot(t int64) (int64, int64) {
	s := t - ((t%p.Length)+p.Length)%p.Length
	return s, s + p.Length
}

// Add places an item in the aggregation state of one key. st is not
// changed; Decision.State is the new state to commit with the sealed
// windows and the correction.
func (p Policy) Add(st WindowState, cur Currency, it Item) (Decision, error) {
	if err := p.Validate(); err != nil {
		return Decision{}, err
	}
	if it.Amount < 0 {
		return Decision{}, fmt.Errorf("%w: negative amount in a window", ErrBadMoney)
	}
	d := Decision{State: p.passSplit(st, it.Time)}
	if it.Time < d.State.Floor {
		s, e := p.slot(it.Time)
		return Decision{State: st, Correction: &Correction{SlotStart: s, SlotEnd: e, Item: it}}, nil
	}
	w := &d.State.Open
	if w.End != 0 && it.Time >= w.End {
		d.Sealed = append(d.Sealed, seal(w, SealedByTime))
		d.State.Floor = w.End
		*w = Window{}
	}
	if w.End != 0 && w.Tickets > 0 && w.Tariff != it.Tariff && w.Start+1 < w.End {
		// Another tariff version: the part ends where the item is (after
		// the part's first instant), and the rest of the slot goes on in
		// a new part. A part of one instant keeps the item, and the
		// version of its first items.
		slotEnd := w.End
		w.End = min(max(it.Time, w.Start+1), slotEnd-1)
		d.Sealed = append(d.Sealed, seal(w, SealedByTariff))
		next := w.End
		*w = Window{Start: next}
	}
	if w.End == 0 {
		s, e := p.slot(it.Time)
		start := max(s, d.State.Floor)
		if w.Start > start && w.Start < e { // the next part of a slot a threshold or a tariff split
			start = w.Start
		}
		*w = Window{Start: start, End: e, Currency: cur, Tariff: it.Tariff}
	}
	if err := w.add(cur, it); err != nil {
		return Decision{}, err
	}
	if p.Threshold > 0 && w.Amount >= p.Threshold {
		// The part ends after the item that crossed, and always after its
		// own start, so the next part's start is new.
		slotEnd := w.End
		w.End = min(max(it.Time+1, w.Start+1), slotEnd)
		d.Sealed = append(d.Sealed, seal(w, SealedByThreshold))
		next := w.End
		*w = Window{}
		if next < slotEnd {
			w.Start = next
		} else {
			d.State.Floor = slotEnd // the part took the slot's last instant
		}
	}
	return d, nil
}

// add adds one item of currency cur to w's totals, bands and tree. w's
// slices may be shared with a state the caller must not change: add
// writes new ones.
func (w *Window) add(cur Currency, it Item) error {
	if w.Currency != cur {
		return fmt.Errorf("%w: window in %s, item in %s", ErrCurrencyMismatch, w.Currency, cur)
	}
	amt, err := w.Amount.Add(it.Amount)
	if err != nil {
		return err
	}
	if w.Quantity+it.Quantity < w.Quantity {
		return fmt.Errorf("%w: window quantity", ErrOverflow)
	}
	if it.Proven > it.Quantity {
		return fmt.Errorf("%w: an item proves %d of its quantity %d", ErrBadState, it.Proven, it.Quantity)
	}
	if len(it.Bands) > 0 {
		if w.Bands, err = MergeBands(w.Bands, it.Bands); err != nil { // a new slice: the old one is not changed
			return err
		}
	}
	w.Amount, w.Quantity, w.Tickets, w.Proven = amt, w.Quantity+it.Quantity, w.Tickets+1, w.Proven+it.Proven // Proven <= Quantity
	// The frontier's slice may be shared: copy before appending.
	w.Tree.Peaks = append([]Hash(nil), w.Tree.Peaks...)
	w.Tree.Add(it.Ticket)
	return nil
}

// Fold gathers the late items of one sealed slot of a key — usage that
// arrives after its window sealed (a device back from an outage with a
// backlog) — into one correction, so that a backlog of N tickets over W
// windows is at most W corrections, not N. It is a window over the slot
// (Start, End) that seals as a correction once its time to fold is up.
type Fold struct {
	// ID names the fold's Merkle leaves in the gateway's books until it
	// seals; never reused.
	ID uint64
	// Since is when its first item arrived (gateway clock, Unix ms); Late
	// the most any item was late: its arrival less the slot's end.
	Since, Late int64
	Window
}

// Add adds a late item that arrived at now (Unix ms) to f: the first one
// opens f over the correction's slot. f's slices are not changed: Add
// writes new ones.
func (f *Fold) Add(c Correction, cur Currency, now int64) error {
	if f.Window.End == 0 {
		f.Window = Window{Start: c.SlotStart, End: c.SlotEnd, Currency: cur}
		f.Since = now
	}
	if c.SlotStart != f.Start || c.SlotEnd != f.End {
		return fmt.Errorf("%w: an item of slot [%d, %d) in the fold of [%d, %d)", ErrBadState, c.SlotStart, c.SlotEnd, f.Start, f.End)
	}
	switch {
	case f.Tickets == 0:
		f.Tariff = c.Item.Tariff
	case f.Tariff != c.Item.Tariff:
		f.Tariff = "" // late usage priced by several versions: the correction names none
	}
	if err := f.Window.add(cur, c.Item); err != nil {
		return err
	}
	f.Late = max(f.Late, now-f.End)
	return nil
}

// Seal is the fold's correction: its totals and Merkle root.
func (f *Fold) Seal() Sealed { return seal(&f.Window, 0) }

// passSplit ends the slot a threshold split, with nothing open since, once
// t is at or past the slot's end: the slot's late items are corrections
// from then on.
func (p Policy) passSplit(st WindowState, t int64) WindowState {
	if st.Open.End != 0 || st.Open.Start == 0 {
		return st
	}
	if _, e := p.slot(st.Open.Start); t >= e {
		return WindowState{Floor: max(st.Floor, e)}
	}
	return st
}

// Close seals the open window if its end time is at or before now.
func (p Policy) Close(st WindowState, now int64) (WindowState, *Sealed) {
	if st.Open.End == 0 {
		return p.passSplit(st, now), nil
	}
	if now < st.Open.End {
		return st, nil
	}
	s := seal(&st.Open, SealedByTime)
	return WindowState{Floor: st.Open.End}, &s
}

func seal(w *Window, why SealReason) Sealed {
	s := Sealed{Start: w.Start, End: w.End, Currency: w.Currency, Quantity: w.Quantity, Amount: w.Amount,
		Tickets: w.Tickets, Root: w.Tree.Root(), Reason: why, Proven: w.Proven, Tariff: w.Tariff}
	if len(w.Bands) > 0 {
		s.Bands = CompleteBands(w.Bands, w.Quantity, w.Amount)
	}
	return s
}
