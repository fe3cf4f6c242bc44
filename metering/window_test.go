package metering_test

import (
	"errors"
	"testing"

	"github.com/farthing-iot/farthing/metering"
)

const hour = int64(3600_000)

func item(at int64, amount metering.Nanos, n int) metering.Item {
	return metering.Item{Time: at, Quantity: 10, Amount: amount, Ticket: tickets(n + 1)[n]}
}

func TestWindowsCloseOnTimeAndThreshold(t *testing.T) {
	p := metering.Policy{Length: hour, Threshold: 1_000}
	var st metering.WindowState
	base := 1_790_000_000_000 - 1_790_000_000_000%hour
	add := func(at int64, amount metering.Nanos, n int) metering.Decision {
		d, err := p.Add(st, "EUR", item(at, amount, n))
		if err != nil {
			t.Fatal(err)
		}
		st = d.State
		return d
	}
	add(base+10, 300, 0)
	add(base+20, 300, 1)
	if d := add(base+30, 500, 2); len(d.Sealed) != 1 || d.Sealed[0].Reason != metering.SealedByThreshold ||
		d.Sealed[0].Amount != 1_100 || d.Sealed[0].Tickets != 3 || d.Sealed[0].End != base+31 {
		t.Fatalf("threshold seal = %+v", d.Sealed)
	}
	// The root of the sealed window is the root of its three tickets.
	// The next window starts where the early one ended.
	d := add(base+40, 100, 3)
	if d.State.Open.Start != base+31 || d.State.Open.End != base+hour {
		t.Fatalf("window after an early close = [%d, %d)", d.State.Open.Start-base, d.State.Open.End-base)
	}
	// An item in the next hour seals the open window by time.
	d = add(base+hour+5, 100, 4)
	if len(d.Sealed) != 1 || d.Sealed[0].Reason != metering.SealedByTime || d.Sealed[0].Amount != 100 {
		t.Fatalf("time seal = %+v", d.Sealed)
	}
	// A late item for the sealed first hour is a correction, not dropped
	// and not moved.
	d = add(base+35, 7, 5)
	if d.Correction == nil || d.Correction.SlotStart != base || d.Correction.Item.Amount != 7 || d.State.Open.Amount != 100 {
		t.Fatalf("late item: correction %+v, open amount %d", d.Correction, d.State.Open.Amount)
	}
	// Close on a timer.
	if _, s := p.Close(st, base+2*hour-1); s != nil {
		t.Fatal("closed before its end")
	}
	st2, s := p.Close(st, base+2*hour)
	if s == nil || s.Amount != 100 || st2.Open.End != 0 || st2.Floor != base+2*hour {
		t.Fatalf("Close = %+v, %+v", s, st2)
	}
}

func TestWindowRootCoversItsTickets(t *testing.T) {
	p := metering.Policy{Length: hour}
	var st metering.WindowState
	ts := tickets(10)
	for i, h := range ts {
		d, err := p.Add(st, "EUR", metering.Item{Time: int64(i), Quantity: 1, Amount: 1, Ticket: h})
		if err != nil {
			t.Fatal(err)
		}
		st = d.State
	}
	_, s := p.Close(st, hour)
	if s == nil || s.Root != metering.MerkleRoot(ts) || s.Tickets != 10 {
		t.Fatalf("sealed root %x tickets %d; want the root of the 10 tickets", s.Root, s.Tickets)
	}
	if _, err := p.Add(st, "USD", metering.Item{Time: 11}); err == nil {
		t.Fatal("a USD item joined a EUR window")
	}
}

func TestSplitIsExact(t *testing.T) {
	parts, err := metering.Split(100, []uint64{1, 1, 1})
	if err != nil || parts[0]+parts[1]+parts[2] != 100 || parts[0] != 34 {
		t.Fatalf("Split(100, 1:1:1) = %v, %v", parts, err)
	}
	parts, _ = metering.Split(1_000_000_007, []uint64{70, 20, 10}) // creator, publisher, platform
	if parts[0]+parts[1]+parts[2] != 1_000_000_007 {
		t.Fatalf("parts %v do not sum", parts)
	}
	if a, err := metering.ThresholdForFee(300_000_000, 100, 200); err != nil || a != 30_000_000_000 {
		t.Fatalf("ThresholdForFee(0.30 + 1%%, under 2%%) = %d, %v; want 30 EUR", a, err)
	}
}

// A threshold closes a part of a slot, not the slot: an item a little
// behind the one that crossed (another device's clock) joins the next part
// instead of becoming a correction. Only the slot's end makes items late.
func TestThresholdSplitsTheSlot(t *testing.T) {
	p := metering.Policy{Length: hour, Threshold: 1_000}
	var st metering.WindowState
	base := 1_790_000_000_000 - 1_790_000_000_000%hour
	n := 0
	add := func(at int64, amount metering.Nanos) metering.Decision {
		t.Helper()
		d, err := p.Add(st, "EUR", item(at, amount, n))
		if err != nil {
			t.Fatal(err)
		}
		n++
		st = d.State
		return d
	}
	add(base+500, 600)
	if d := add(base+600, 600); len(d.Sealed) != 1 || d.Sealed[0].End != base+601 {
		t.Fatalf("threshold seal = %+v", d.Sealed)
	}
	d := add(base+550, 10) // behind the crossing item
	if d.Correction != nil || d.State.Open.Start != base+601 || d.State.Open.Tickets != 1 {
		t.Fatalf("an item behind the threshold: correction %+v, open %+v", d.Correction, d.State.Open)
	}
	// A second split of the slot, crossed by an item from before the first
	// split's end: the parts' starts still increase.
	d = add(base+100, 2_000)
	if len(d.Sealed) != 1 || d.Sealed[0].Start != base+601 || d.Sealed[0].End != base+602 {
		t.Fatalf("second split = %+v", d.Sealed)
	}
	// Nothing open now; the split slot's time passes on the timer, and
	// then its items are corrections.
	if st2, s := p.Close(st, base+hour-1); s != nil || st2.Floor != st.Floor {
		t.Fatalf("Close before the slot's end: %+v %+v", s, st2)
	}
	st2, s := p.Close(st, base+hour)
	if s != nil || st2.Floor != base+hour {
		t.Fatalf("Close after the split slot's end: sealed %+v, floor %d", s, st2.Floor-base)
	}
	// Without the timer, an item of a later slot ends the split slot too.
	d = add(base+hour+10, 1)
	if d.State.Floor != base+hour || d.State.Open.Start != base+hour {
		t.Fatalf("next slot: floor %d, open %+v", d.State.Floor-base, d.State.Open)
	}
	if d = add(base+700, 1); d.Correction == nil || d.Correction.SlotStart != base {
		t.Fatalf("an item of the passed split slot: %+v", d.Correction)
	}
}

// A window sums its items' price bands; its sealed totals list them,
// completed with "unsplit" for items that came without bands, and the
// bands survive the window state's encoding.
func TestWindowBands(t *testing.T) {
	p := metering.Policy{Length: 3_600_000}
	var st metering.WindowState
	add := func(at int64, q uint64, amt metering.Nanos, bands ...metering.BandPart) {
		t.Helper()
		d, err := p.Add(st, "EUR", metering.Item{Time: at, Quantity: q, Amount: amt, Ticket: metering.Hash{byte(at)}, Bands: bands})
		if err != nil {
			t.Fatal(err)
		}
		st = d.State
	}
	add(1000, 150, 50_000_000, metering.BandPart{Band: "free", Quantity: 100},
		metering.BandPart{Band: "minimum", Amount: 30_000_000}, metering.BandPart{Band: "tier 1", Quantity: 50, Amount: 20_000_000})
	before := st
	add(2000, 1990, 691_000_000, metering.BandPart{Band: "tier 1", Quantity: 940, Amount: 376_000_000},
		metering.BandPart{Band: "tier 2", Quantity: 1050, Amount: 315_000_000})
	if len(before.Open.Bands) != 3 || before.Open.Bands[2].Quantity != 50 {
		t.Fatalf("adding an item changed the state it was given: %+v", before.Open.Bands)
	}
	add(3000, 7, 7_000_000) // an item without bands (from before bands)
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back metering.WindowState
	if err := back.UnmarshalBinary(b); err != nil || len(back.Open.Bands) != 4 {
		t.Fatalf("window state round trip: %+v, %v", back.Open.Bands, err)
	}
	_, sealed := p.Close(back, 3_600_000)
	want := []metering.BandPart{{Band: "free", Quantity: 100}, {Band: "minimum", Amount: 30_000_000},
		{Band: "tier 1", Quantity: 990, Amount: 396_000_000}, {Band: "tier 2", Quantity: 1050, Amount: 315_000_000},
		{Band: "unsplit", Quantity: 7, Amount: 7_000_000}}
	if sealed == nil || len(sealed.Bands) != len(want) {
		t.Fatalf("sealed bands: %+v", sealed)
	}
	for i := range want {
		if sealed.Bands[i] != want[i] {
			t.Errorf("band %d: %+v, want %+v", i, sealed.Bands[i], want[i])
		}
	}
	// A window state from before bands (no bands written) still decodes.
	st.Open.Bands = nil
	old, _ := st.MarshalBinary()
	if err := back.UnmarshalBinary(old); err != nil || back.Open.Bands != nil {
		t.Fatalf("a window without bands: %+v, %v", back.Open.Bands, err)
	}
	if metering.CompleteBands(want, 1, 1) != nil {
		t.Error("bands larger than the totals were completed")
	}
}

// The part of a window's quantity that payword chains prove adds up from
// its items, goes into the sealed window, and survives the state's
// encoding with bands and without.
func TestWindowProvenQuantity(t *testing.T) {
	p := metering.Policy{Length: hour}
	var st metering.WindowState
	hs := tickets(4)
	for i, it := range []metering.Item{
		{Time: 1, Quantity: 10, Amount: 100, Ticket: hs[0], Proven: 10},
		{Time: 2, Quantity: 5, Amount: 50, Ticket: hs[1]},
		{Time: 3, Quantity: 7, Amount: 70, Ticket: hs[2], Proven: 7},
	} {
		d, err := p.Add(st, "EUR", it)
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
		st = d.State
	}
	if _, err := p.Add(st, "EUR", metering.Item{Time: 4, Quantity: 1, Ticket: hs[3], Proven: 2}); !errors.Is(err, metering.ErrBadState) {
		t.Errorf("an item proving more than its quantity: %v", err)
	}
	for _, bands := range [][]metering.BandPart{nil, {{Band: "tier 1", Quantity: 22, Amount: 220}}} {
		st.Open.Bands = bands
		b, _ := st.MarshalBinary()
		var back metering.WindowState
		if err := back.UnmarshalBinary(b); err != nil || back.Open.Proven != 17 || len(back.Open.Bands) != len(bands) {
			t.Fatalf("round trip with %d bands: proven %d, bands %v, %v", len(bands), back.Open.Proven, back.Open.Bands, err)
		}
		_, sealed := p.Close(back, hour)
		if sealed == nil || sealed.Proven != 17 || sealed.Quantity != 22 {
			t.Fatalf("sealed: %+v", sealed)
		}
	}
	// A proven quantity above the window's is a corrupt state.
	st.Open.Proven = 23
	b, _ := st.MarshalBinary()
	if err := new(metering.WindowState).UnmarshalBinary(b); !errors.Is(err, metering.ErrBadState) {
		t.Errorf("proven above quantity decoded: %v", err)
	}
}

// Late items of one slot fold into one correction: its totals, bands and
// Merkle root are those of its items, it remembers when it began and how
// late its latest item was, and it survives storage.
func TestFoldGathersOneSlot(t *testing.T) {
	p := metering.Policy{Length: 10_000}
	st := metering.WindowState{Floor: 100_000}
	var f metering.Fold
	f.ID = 7
	var hashes []metering.Hash
	for i, at := range []int64{20_001, 25_000, 29_999} {
		h := metering.TicketHash([]byte{byte(i)})
		hashes = append(hashes, h)
		d, err := p.Add(st, "EUR", metering.Item{Time: at, Quantity: 10, Amount: 3_000, Ticket: h})
		if err != nil || d.Correction == nil {
			t.Fatalf("item at %d: %+v, %v; want a correction", at, d, err)
		}
		if err := f.Add(*d.Correction, "EUR", 200_000+int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	s := f.Seal()
	if s.Start != 20_000 || s.End != 30_000 || s.Tickets != 3 || s.Quantity != 30 || s.Amount != 9_000 || s.Root != metering.MerkleRoot(hashes) {
		t.Fatalf("sealed fold %+v", s)
	}
	if f.Since != 200_000 || f.Late != 200_002-30_000 {
		t.Errorf("since %d, late %d", f.Since, f.Late)
	}
	other, _ := p.Add(st, "EUR", metering.Item{Time: 31_000, Quantity: 1, Amount: 1, Ticket: hashes[0]})
	if err := f.Add(*other.Correction, "EUR", 200_003); err == nil {
		t.Error("an item of another slot went into the fold")
	}
	b, _ := f.MarshalBinary()
	var back metering.Fold
	if err := back.UnmarshalBinary(b); err != nil || back.Seal().Root != s.Root || back.Seal().Amount != s.Amount || back.ID != 7 || back.Since != f.Since {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if err := back.UnmarshalBinary(b[:len(b)-1]); !errors.Is(err, metering.ErrBadState) {
		t.Errorf("a truncated fold decoded: %v", err)
	}
}

// TestTariffVersionSplitsTheWindow: an item priced by another tariff
// version closes the window's part (sealed by "tariff", naming the
// version of its items); the slot goes on in a new part naming the new
// version; the version survives storage; a fold of late items priced by
// several versions names none.
func TestTariffVersionSplitsTheWindow(t *testing.T) {
	p := metering.Policy{Length: hour}
	hs := tickets(5)
	var st metering.WindowState
	var sealed []metering.Sealed
	for i, it := range []metering.Item{
		{Time: 1_000, Quantity: 10, Amount: 300, Ticket: hs[0], Tariff: "v1"},
		{Time: 2_000, Quantity: 10, Amount: 300, Ticket: hs[1], Tariff: "v1"},
		{Time: 3_000, Quantity: 10, Amount: 500, Ticket: hs[2], Tariff: "v2"},
		{Time: 4_000, Quantity: 10, Amount: 500, Ticket: hs[3], Tariff: "v2"},
	} {
		d, err := p.Add(st, "EUR", it)
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
		st, sealed = d.State, append(sealed, d.Sealed...)
	}
	if len(sealed) != 1 || sealed[0].Reason != metering.SealedByTariff || sealed[0].Tariff != "v1" || sealed[0].Amount != 600 ||
		sealed[0].End != 3_000 {
		t.Fatalf("sealed: %+v", sealed)
	}
	if st.Open.Tariff != "v2" || st.Open.Start != 3_000 || st.Open.Amount != 1_000 {
		t.Fatalf("the new part: %+v", st.Open)
	}
	b, _ := st.MarshalBinary()
	var back metering.WindowState
	if err := back.UnmarshalBinary(b); err != nil || back.Open.Tariff != "v2" || back.Open.Proven != 0 {
		t.Fatalf("round trip: %+v %v", back.Open, err)
	}
	if _, s := p.Close(back, hour); s == nil || s.Tariff != "v2" || s.Reason != metering.SealedByTime {
		t.Fatalf("closed: %+v", s)
	}
	var f metering.Fold
	for i, tariff := range []string{"v1", "v2"} {
		c := metering.Correction{SlotStart: 0, SlotEnd: hour, Item: metering.Item{Time: 10, Quantity: 1, Amount: 1, Ticket: hs[i], Tariff: tariff}}
		if err := f.Add(c, "EUR", hour+1); err != nil {
			t.Fatal(err)
		}
		if want := map[int]string{0: "v1", 1: ""}[i]; f.Tariff != want {
			t.Fatalf("fold after %d items names %q; want %q", i+1, f.Tariff, want)
		}
	}
}
