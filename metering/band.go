package metering

import (
	"cmp"
	"fmt"
	"slices"
)

// Band names of the parts of a charge that are not a priced band.
const (
	// BandFree is the part of the usage inside the free allowance: its
	// quantity, amount 0.
	BandFree = "free"
	// BandMinimum is the top-up to the tariff's minimum charge: amount
	// only, quantity 0.
	BandMinimum = "minimum"
	// BandUnsplit holds what a window took in before its items carried
	// bands (a window opened by an older state file): the difference
	// between the window's totals and its bands.
	BandUnsplit = "unsplit"
)

// maxBandParts bounds the bands a window keeps: every priced band of a
// tariff, free, minimum and unsplit, with room for a tariff change inside
// a window.
const maxBandParts = 2*MaxBands + 3

// BandPart is the part of a usage, window or aggregate that fell in one
// price band, named for people ("tier 1", "window peak", "free").
type BandPart struct {
	Band     string
	Quantity uint64
	Amount   Nanos
}

// Parts names the parts of a charge under tariff t, sorted by name: each
// priced band that took usage or money, the free allowance and the
// minimum-charge top-up. Their quantities add up to ch.Quantity and their
// amounts to ch.Amount.
func (ch Charge) Parts(t *Tariff) []BandPart {
	var out []BandPart
	for b, bc := range ch.Bands {
		if bc.Quantity != 0 || bc.Amount != 0 {
			out = append(out, BandPart{Band: t.BandName(b), Quantity: bc.Quantity, Amount: bc.Amount})
		}
	}
	if ch.Free != 0 {
		out = append(out, BandPart{Band: BandFree, Quantity: ch.Free})
	}
	if ch.TopUp != 0 {
		out = append(out, BandPart{Band: BandMinimum, Amount: ch.TopUp})
	}
	// The names of one tariff's bands are distinct: sorting is enough.
	slices.SortFunc(out, func(a, b BandPart) int { return cmp.Compare(a.Band, b.Band) })
	return out
}

// MergeBands adds parts (in any order) into bands (sorted by name) and
// returns a new slice, sorted by name: bands itself is not changed.
func MergeBands(bands, parts []BandPart) ([]BandPart, error) {
	out := make([]BandPart, len(bands), len(bands)+len(parts))
	copy(out, bands)
	for _, p := range parts {
		i, found := slices.BinarySearchFunc(out, p.Band, func(b BandPart, name string) int { return cmp.Compare(b.Band, name) })
		if !found {
			out = slices.Insert(out, i, BandPart{Band: p.Band})
		}
		q := out[i].Quantity + p.Quantity
		if q < p.Quantity {
			return nil, fmt.Errorf("%w: quantity of band %s", ErrOverflow, p.Band)
		}
		a, err := out[i].Amount.Add(p.Amount)
		if err != nil {
			return nil, err
		}
		out[i].Quantity, out[i].Amount = q, a
	}
	if len(out) > maxBandParts {
		return nil, fmt.Errorf("%w: %d price bands in one window", ErrOverflow, len(out))
	}
	return out, nil
}

// CompleteBands returns bands with a BandUnsplit part for what the totals
// hold beyond them, so that the parts add up to quantity and amount. It
// returns nil when the bands exceed the totals (they cannot describe them).
func CompleteBands(bands []BandPart, quantity uint64, amount Nanos) []BandPart {
	var q uint64
	var a Nanos
	for _, b := range bands {
		if q+b.Quantity < q || b.Amount < 0 {
			return nil
		}
		var err error
		if a, err = a.Add(b.Amount); err != nil {
			return nil
		}
		q += b.Quantity
	}
	if q > quantity || a > amount {
		return nil
	}
	if q == quantity && a == amount {
		return bands
	}
	out, err := MergeBands(bands, []BandPart{{Band: BandUnsplit, Quantity: quantity - q, Amount: amount - a}})
	if err != nil {
		return nil
	}
	return out
}

// appendBands appends the encoding of bands to w.
func (w wbuf) bands(bands []BandPart) wbuf {
	w = w.u(uint64(len(bands)))
	for _, b := range bands {
		w = w.s(b.Band).u(b.Quantity).i(int64(b.Amount))
	}
	return w
}

// bands reads what wbuf.bands wrote.
func (r *rbuf) bands() []BandPart {
	n := r.u()
	if r.err == nil && n > maxBandParts {
		r.fail("too many price bands")
		return nil
	}
	var out []BandPart
	for i := uint64(0); i < n && r.err == nil; i++ {
		b := BandPart{Band: r.s(), Quantity: r.u(), Amount: r.nanos()}
		if r.err == nil && (b.Band == "" || b.Amount < 0 || (len(out) > 0 && out[len(out)-1].Band >= b.Band)) {
			r.fail("bad or unsorted price band")
		}
		out = append(out, b)
	}
	return out
}

// AppendBands appends bands to a record as its last field.
func (s StateWriter) AppendBands(bands []BandPart) StateWriter {
	return StateWriter(wbuf(s).bands(bands))
}

// Bands reads bands written by StateWriter.AppendBands.
func (s *StateReader) Bands() []BandPart { return s.r.bands() }
