package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Records the gateway stores besides metering's state types. Each is a
// version byte (1) then varints and length-prefixed strings.

var errRecord = errors.New("gateway: bad stored record")

// deviceState is what the gateway remembers per device, in one record so
// that accepting a ticket writes it once: the last accepted seq and each
// meter's last reading.
type deviceState struct {
	LastSeq uint64 // seq of the last accepted ticket
	Meters  []meterRecord
}

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
}

type enc []byte

func (e enc) u(v uint64) enc { return binary.AppendUvarint(e, v) }
func (e enc) i(v int64) enc  { return binary.AppendVarint(e, v) }
func (e enc) s(v string) enc { return append(e.u(uint64(len(v))), v...) }

type dec struct {
	b   []byte
	err error
}

func newDec(b []byte) *dec {
	if len(b) == 0 || b[0] != 1 {
		return &dec{err: errRecord}
	}
	return &dec{b: b[1:]}
}

func (d *dec) u() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) i() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) s() string {
	n := d.u()
	if d.err != nil || n > uint64(len(d.b)) || n > 256 {
		d.err = errRecord
		return ""
	}
	v := string(d.b[:n])
	d.b = d.b[n:]
	return v
}

func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errRecord
	}
	return d.err
}

func (s deviceState) encode() []byte {
	e := enc{1}.u(s.LastSeq).u(uint64(len(s.Meters)))
	for _, m := range s.Meters {
		mb, _ := m.State.MarshalBinary()
		e = e.s(m.Name).s(string(mb))
	}
	return e
}

func decodeDeviceState(b []byte) (deviceState, error) {
	d := newDec(b)
	s := deviceState{LastSeq: d.u()}
	n := d.u()
	if n > 64 {
		return s, errRecord
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		name, raw := d.s(), d.s()
		var st metering.MeterState
		if d.err == nil {
			if err := st.UnmarshalBinary([]byte(raw)); err != nil {
				return s, err
			}
		}
		s.Meters = append(s.Meters, meterRecord{name, st})
	}
	return s, d.done()
}

func (r ticketRecord) encode() []byte {
	e := enc{1}.u(r.Charged).i(r.Balance).u(uint64(len(r.Leaves)))
	e = append(e, r.Leaves...)
	return append(e, r.Raw...)
}

func decodeTicketRecord(b []byte) (ticketRecord, error) {
	d := newDec(b)
	r := ticketRecord{Charged: d.u(), Balance: d.i()}
	n := d.u()
	if d.err != nil || n > uint64(len(d.b)) {
		return r, errRecord
	}
	r.Leaves, r.Raw = d.b[:n:n], d.b[n:]
	if len(r.Raw) == 0 {
		r.Raw = nil
	}
	return r, nil
}

func (r sealedRecord) encode() []byte {
	e := enc{1}.s(r.Provider).s(r.Account).s(r.Meter).i(r.Start).i(r.End).s(string(r.Currency)).u(r.Quantity).
		i(int64(r.Amount)).u(r.Tickets).u(uint64(r.Reason)).u(r.Corrects)
	return append(e, r.Root[:]...)
}

func decodeSealedRecord(b []byte) (sealedRecord, error) {
	d := newDec(b)
	var r sealedRecord
	r.Provider, r.Account, r.Meter = d.s(), d.s(), d.s()
	r.Start, r.End, r.Currency = d.i(), d.i(), metering.Currency(d.s())
	r.Quantity, r.Amount, r.Tickets = d.u(), metering.Nanos(d.i()), d.u()
	reason := d.u()
	if reason > 0xff {
		d.err = errRecord
	}
	r.Reason, r.Corrects = metering.SealReason(reason), d.u()
	if d.err == nil && len(d.b) == len(r.Root) {
		copy(r.Root[:], d.b)
		d.b = nil
	}
	if err := d.done(); err != nil {
		return r, fmt.Errorf("sealed record: %w", err)
	}
	return r, nil
}

// Aggregate turns the record into the protocol message for the provider.
func (r sealedRecord) Aggregate(gateway string, seq uint64) protocol.Aggregate {
	return protocol.Aggregate{Gateway: gateway, Seq: seq, Provider: r.Provider, Account: r.Account, Meter: r.Meter,
		WindowStart: uint64(max(r.Start, 1)), WindowEnd: uint64(max(r.End, r.Start+1, 2)), Quantity: r.Quantity,
		Amount: uint64(r.Amount), Currency: string(r.Currency), Tickets: r.Tickets, MerkleRoot: r.Root[:], Corrects: r.Corrects}
}
