package ledger

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Records the gateway stores besides metering's state types, in
// metering's state encoding (metering.StateWriter): a version byte (1),
// then varints and length-prefixed strings.

var errRecord = errors.New("ledger: bad stored record")

// deviceState is what the gateway remembers per device, in one record so
// that accepting a ticket writes it once: the last accepted seq and each
// meter's last reading.
type deviceState struct {
	LastSeq uint64 // seq of the last accepted ticket
	Meters  []meterRecord
	// Key is the key id of the last ticket accepted (zero in a record
	// from before it was kept): a rotation is complete once it is the
	// next key.
	Key [protocol.KeyIDLen]byte
	// Chain is how far the device's newest payword chain went (zero if
	// it has none): kept here, in the record every ticket writes anyway,
	// so that a payword costs no write of its own. Only the newest chain
	// can take paywords (its seqs are above every older chain's).
	Chain activeChain
}

// activeChain is a device's newest payword chain and its last accepted
// index and payword (the anchor at index 0).
type activeChain struct {
	ID   protocol.ChainID
	Last uint32
	Word protocol.Payword
}

const activeChainLen = protocol.ChainIDLen + 4 + protocol.PaywordSize

type meterRecord struct {
	Name  string
	State metering.MeterState
}

// meter returns the state of meter name (zero if none yet).
func (s *deviceState) meter(name string) metering.MeterState {
	for _, m := range s.Meters {
		if m.Name == name {
			return m.State
		}
	}
	return metering.MeterState{}
}

// setMeter records meter name's new state.
func (s *deviceState) setMeter(name string, st metering.MeterState) {
	for i := range s.Meters {
		if s.Meters[i].Name == name {
			s.Meters[i].State = st
			return
		}
	}
	s.Meters = append(s.Meters, meterRecord{name, st})
}

// ticketRecord is everything kept of one accepted ticket, in one value so
// that accepting a ticket writes one record, not three: the outcome (so a
// repeated ticket is answered with the original charge), the keys of its
// Merkle leaves, and its bytes as received (nil once pruned).
type ticketRecord struct {
	Charged uint64
	Balance int64
	Leaves  []byte // uvarint-length-prefixed leaf keys
	Raw     []byte
}

// sealedRecord is a sealed window or a correction: one aggregate in the
// outbox, numbered by the gapless aggregate seq.
type sealedRecord struct {
	Provider, Account, Meter string
	metering.Sealed
	Corrects uint64 // aggregate seq corrected; 0 for a window
	// Fold is the id of the fold a correction sealed from (its leaves are
	// under foldPrefix); 0 for a window, or a correction of one ticket
	// from before folds.
	Fold uint64
}

// leafPrefix is the key prefix of the Merkle leaves of aggregate seq,
// whose record is r.
func (r sealedRecord) leafPrefix(seq uint64) []byte {
	switch {
	case r.Fold != 0:
		return foldPrefix(r.Fold)
	case r.Corrects != 0 || r.Reason == 0:
		return leafKeyCorrection(seq)[:10]
	}
	return leafWindowPrefix(joinKey(r.Provider, r.Account, r.Meter), r.Start)
}

// MarshalBinary encodes the device's state record.
func (s deviceState) MarshalBinary() ([]byte, error) {
	w := metering.NewStateWriter().Uint(s.LastSeq).Uint(uint64(len(s.Meters)))
	for _, m := range s.Meters {
		mb, err := m.State.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("device state, meter %s: %w", m.Name, err)
		}
		w = w.String(m.Name).String(string(mb))
	}
	hasChain := s.Chain != activeChain{}
	if s.Key != ([protocol.KeyIDLen]byte{}) || hasChain {
		w = w.String(string(s.Key[:]))
	}
	if hasChain { // optional, after the key id
		var c [activeChainLen]byte
		copy(c[:], s.Chain.ID[:])
		binary.BigEndian.PutUint32(c[protocol.ChainIDLen:], s.Chain.Last)
		copy(c[protocol.ChainIDLen+4:], s.Chain.Word[:])
		w = w.String(string(c[:]))
	}
	return w, nil
}

func decodeDeviceState(b []byte) (deviceState, error) {
	r := metering.NewStateReader(b, "device state")
	s := deviceState{LastSeq: r.Uint()}
	n := r.Uint()
	if n > 64 {
		return s, fmt.Errorf("%w: %d meters", errRecord, n)
	}
	for i := uint64(0); i < n && r.Err() == nil; i++ {
		name, raw := r.String(), r.String()
		var st metering.MeterState
		if r.Err() == nil {
			if err := st.UnmarshalBinary([]byte(raw)); err != nil {
				return s, err
			}
		}
		s.Meters = append(s.Meters, meterRecord{name, st})
	}
	if rest := r.Rest(); len(rest) > 0 { // the key id, an optional trailing field
		n, w := binary.Uvarint(rest)
		if w <= 0 || n != protocol.KeyIDLen || len(rest) < w+int(n) {
			return s, fmt.Errorf("%w: device state: bad key id", errRecord)
		}
		copy(s.Key[:], rest[w:])
		if rest = rest[w+int(n):]; len(rest) > 0 { // the active chain, optional after it
			n, w := binary.Uvarint(rest)
			if w <= 0 || n != activeChainLen || len(rest) != w+int(n) {
				return s, fmt.Errorf("%w: device state: bad payword chain", errRecord)
			}
			c := rest[w:]
			copy(s.Chain.ID[:], c)
			s.Chain.Last = binary.BigEndian.Uint32(c[protocol.ChainIDLen:])
			copy(s.Chain.Word[:], c[protocol.ChainIDLen+4:])
		}
	}
	return s, r.Err()
}

func (t ticketRecord) encode() []byte {
	return metering.NewStateWriter().Uint(t.Charged).Int(t.Balance).Uint(uint64(len(t.Leaves))).Rest(t.Leaves).Rest(t.Raw)
}

func decodeTicketRecord(b []byte) (ticketRecord, error) {
	r := metering.NewStateReader(b, "ticket record")
	t := ticketRecord{Charged: r.Uint(), Balance: r.Int()}
	n := r.Uint()
	rest := r.Rest()
	if err := r.Err(); err != nil {
		return t, err
	}
	if n > uint64(len(rest)) {
		return t, fmt.Errorf("%w: ticket record: leaves truncated", errRecord)
	}
	t.Leaves, t.Raw = rest[:n:n], rest[n:]
	if len(t.Raw) == 0 {
		t.Raw = nil
	}
	return t, nil
}

func (s sealedRecord) encode() []byte {
	return metering.NewStateWriter().String(s.Provider).String(s.Account).String(s.Meter).Int(s.Start).Int(s.End).
		String(string(s.Currency)).Uint(s.Quantity).Int(int64(s.Amount)).Uint(s.Tickets).Uint(uint64(s.Reason)).Uint(s.Corrects).
		Rest(s.sealedTail())
}

// sealedTail is the root, then, if the window has bands or proven usage,
// a record of the bands (maybe none) and, if not 0, the proven quantity
// (a sealed record from before bands ends at the root, one from before
// paywords at the bands).
//
// A folded correction (Fold set) writes the bands, the proven quantity
// even if 0, and the fold id.
//
// A record with a tariff version writes all of those (a fold id of 0 for
// a window), then the version.
func (s sealedRecord) sealedTail() []byte {
	if len(s.Bands) == 0 && s.Proven == 0 && s.Fold == 0 && s.Tariff == "" {
		return s.Root[:]
	}
	w := metering.NewStateWriter().AppendBands(s.Bands)
	if s.Proven > 0 || s.Fold != 0 || s.Tariff != "" {
		w = w.Uint(s.Proven)
	}
	if s.Fold != 0 || s.Tariff != "" {
		w = w.Uint(s.Fold)
	}
	if s.Tariff != "" {
		w = w.String(s.Tariff)
	}
	return append(s.Root[:len(s.Root):len(s.Root)], w...)
}

func decodeSealedRecord(b []byte) (sealedRecord, error) {
	r := metering.NewStateReader(b, "sealed record")
	var s sealedRecord
	s.Provider, s.Account, s.Meter = r.String(), r.String(), r.String()
	s.Start, s.End, s.Currency = r.Int(), r.Int(), metering.Currency(r.String())
	s.Quantity, s.Amount, s.Tickets = r.Uint(), metering.Nanos(r.Int()), r.Uint()
	reason := r.Uint()
	if reason > 0xff {
		r.Fail("seal reason out of range")
	}
	s.Reason, s.Corrects = metering.SealReason(reason), r.Uint()
	if rest := r.Rest(); r.Err() == nil {
		if len(rest) < len(s.Root) {
			return s, fmt.Errorf("%w: sealed record: root of %d bytes", errRecord, len(rest))
		}
		copy(s.Root[:], rest)
		if len(rest) > len(s.Root) {
			br := metering.NewStateReader(rest[len(s.Root):], "sealed record's bands")
			s.Bands = br.Bands()
			if br.Err() == nil && br.More() {
				s.Proven = br.Uint()
			}
			if br.Err() == nil && br.More() {
				s.Fold = br.Uint()
				if br.Err() == nil && br.More() {
					if s.Tariff = br.String(); s.Tariff == "" {
						br.Fail("an empty tariff version")
					}
				}
				if s.Fold == 0 && s.Tariff == "" {
					br.Fail("a fold id of 0")
				}
			}
			if br.Done() != nil || (len(s.Bands) == 0 && s.Proven == 0 && s.Fold == 0 && s.Tariff == "") || s.Proven > s.Quantity {
				return s, fmt.Errorf("%w: sealed record: bad price bands or proven quantity", errRecord)
			}
			if len(s.Bands) == 0 {
				s.Bands = nil
			}
		}
	}
	return s, r.Err()
}

// Aggregate turns the record into the protocol message for the provider.
func (r sealedRecord) Aggregate(gateway string, seq uint64) protocol.Aggregate {
	return protocol.Aggregate{Gateway: gateway, Seq: seq, Provider: r.Provider, Account: r.Account, Meter: r.Meter,
		WindowStart: uint64(max(r.Start, 1)), WindowEnd: uint64(max(r.End, r.Start+1, 2)), Quantity: r.Quantity,
		Amount: uint64(r.Amount), Currency: string(r.Currency), Tickets: r.Tickets, MerkleRoot: r.Root[:], Corrects: r.Corrects,
		Bands: wireBands(r.Bands, r.Quantity, r.Amount), Proven: r.Proven, Tariff: r.Tariff}
}

// wireBands is the bands of a sealed window as an aggregate lists them:
// all of them if they fit the wire, else the MaxAggregateBands-1 largest
// by amount, the rest (and any name the wire cannot carry) folded into
// metering.BandUnsplit, so that they still add up. Bands that do not add up to the totals are left out.
func wireBands(bands []metering.BandPart, quantity uint64, amount metering.Nanos) []protocol.AggregateBand {
	bands = metering.CompleteBands(bands, quantity, amount)
	if len(bands) == 0 {
		return nil
	}
	fits := len(bands) <= protocol.MaxAggregateBands
	for _, b := range bands {
		fits = fits && protocol.ValidBandName(b.Band)
	}
	if !fits { // keep the largest, fold the rest into unsplit
		byAmount := slices.Clone(bands)
		slices.SortStableFunc(byAmount, func(a, b metering.BandPart) int { return cmp.Compare(b.Amount, a.Amount) })
		kept := 0
		for i, b := range byAmount {
			if !protocol.ValidBandName(b.Band) || b.Band == metering.BandUnsplit || kept == protocol.MaxAggregateBands-1 {
				byAmount[i].Band = metering.BandUnsplit
				continue
			}
			kept++
		}
		var err error
		if bands, err = metering.MergeBands(nil, byAmount); err != nil {
			return nil
		}
	}
	out := make([]protocol.AggregateBand, len(bands))
	for i, b := range bands {
		out[i] = protocol.AggregateBand{Band: b.Band, Quantity: b.Quantity, Amount: uint64(b.Amount)}
	}
	return out
}
