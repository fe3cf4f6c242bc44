package metering

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Every state type the gateway stores has a stable binary encoding:
//
//	version byte, then the fields in a fixed order as varints
//	(encoding/binary uvarint for unsigned, zig-zag varint for signed),
//	strings and hashes as a uvarint length then the bytes.
//
// The version byte is 1 for every type today. A decoder refuses a version
// it does not know, a truncated value and trailing bytes, so nothing
// half-written is ever taken for state. Changing a layout means a new
// version number and a decoder that still reads the old one. Numbers must
// be in their shortest form, so one state has exactly one encoding.

const stateVersion = 1

// maxStateString bounds a string in stored state.
const maxStateString = 256

type wbuf []byte

func (w wbuf) u(v uint64) wbuf { return binary.AppendUvarint(w, v) }
func (w wbuf) i(v int64) wbuf  { return binary.AppendVarint(w, v) }
func (w wbuf) s(v string) wbuf { return append(w.u(uint64(len(v))), v...) }
func (w wbuf) b(v bool) wbuf {
	if v {
		return append(w, 1)
	}
	return append(w, 0)
}

type rbuf struct {
	b    []byte
	err  error
	what string
}

func newReader(b []byte, what string) *rbuf {
	r := &rbuf{b: b, what: what}
	if len(b) == 0 || b[0] != stateVersion {
		if len(b) == 0 {
			r.err = fmt.Errorf("%w: %s: empty", ErrBadState, what)
		} else {
			r.err = fmt.Errorf("%w: %s: version %d is not supported", ErrBadState, what, b[0])
		}
		return r
	}
	r.b = b[1:]
	return r
}

func (r *rbuf) fail(why string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s: %s", ErrBadState, r.what, why)
	}
}

func (r *rbuf) u() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n != uvarintLen(v) {
		r.fail("truncated, overlong or non-minimal number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rbuf) i() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	ux := uint64(v) << 1 // zig-zag, as binary.PutVarint
	if v < 0 {
		ux = ^ux
	}
	if n <= 0 || n != uvarintLen(ux) {
		r.fail("truncated, overlong or non-minimal number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// uvarintLen is the length of the minimal uvarint encoding of v.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// u8 reads a number that must fit a byte (a kind or reason code): a
// larger one is refused, never truncated.
func (r *rbuf) u8() uint8 {
	v := r.u()
	if v > 0xff {
		r.fail("code out of range")
		return 0
	}
	return uint8(v)
}

func (r *rbuf) bytes(max int) []byte {
	n := r.u()
	if r.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(r.b)) {
		r.fail("string too long or truncated")
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *rbuf) s() string { return string(r.bytes(maxStateString)) }

func (r *rbuf) bool() bool {
	switch v := r.u(); v {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail("bad boolean")
	return false
}

func (r *rbuf) hash() Hash {
	var h Hash
	if p := r.bytes(len(h)); r.err == nil {
		if len(p) != len(h) {
			r.fail("hash has the wrong length")
		}
		copy(h[:], p)
	}
	return h
}

func (r *rbuf) nanos() Nanos { return Nanos(r.i()) }

func (r *rbuf) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	return r.err
}

// meterSuspectVersion is the meter state's layout while a backwards
// reading waits to be told apart: version 1's fields, then Good. A meter
// state without one keeps version 1, byte for byte.
const meterSuspectVersion = 2

// AppendBinary appends the encoding of s.
func (s MeterState) AppendBinary(b []byte) ([]byte, error) {
	if s.Suspect {
		w := wbuf(append(b, meterSuspectVersion))
		return w.u(s.Seq).u(s.Epoch).u(s.Register).i(s.Time).b(s.Started).u(s.Good), nil
	}
	w := wbuf(append(b, stateVersion))
	return w.u(s.Seq).u(s.Epoch).u(s.Register).i(s.Time).b(s.Started), nil
}

// MarshalBinary encodes s.
func (s MeterState) MarshalBinary() ([]byte, error) { return s.AppendBinary(nil) }

// UnmarshalBinary decodes s.
func (s *MeterState) UnmarshalBinary(b []byte) error {
	suspect := len(b) > 0 && b[0] == meterSuspectVersion
	if suspect {
		b = append([]byte{stateVersion}, b[1:]...)
	}
	r := newReader(b, "meter state")
	v := MeterState{Seq: r.u(), Epoch: r.u(), Register: r.u(), Time: r.i(), Started: r.bool()}
	if suspect {
		v.Suspect, v.Good = true, r.u()
		if r.err == nil && v.Good <= v.Register {
			r.fail("a suspect reading's last good register is not above it")
		}
	}
	if err := r.done(); err != nil {
		return err
	}
	*s = v
	return nil
}

// AppendBinary appends the encoding of st. The segment cache is not
// stored: it is rebuilt on first use.
func (st ChargeState) AppendBinary(b []byte) ([]byte, error) {
	w := wbuf(append(b, stateVersion))
	w = w.u(st.Tariff).i(st.PeriodStart).u(st.Used).u(MaxBands)
	for _, r := range st.Rem {
		w = w.u(r)
	}
	return w, nil
}

// MarshalBinary encodes st.
func (st ChargeState) MarshalBinary() ([]byte, error) { return st.AppendBinary(nil) }

// UnmarshalBinary decodes st.
func (st *ChargeState) UnmarshalBinary(b []byte) error {
	r := newReader(b, "charge state")
	v := ChargeState{Tariff: r.u(), PeriodStart: r.i(), Used: r.u()}
	if n := r.u(); r.err == nil && n != MaxBands {
		r.fail(fmt.Sprintf("%d bands, want %d", n, MaxBands))
	}
	for i := range v.Rem {
		v.Rem[i] = r.u()
	}
	if err := r.done(); err != nil {
		return err
	}
	*st = v
	return nil
}

// AppendBinary appends the encoding of a.
func (a Account) AppendBinary(b []byte) ([]byte, error) {
	w := wbuf(append(b, stateVersion))
	w = w.s(a.ID).u(uint64(a.Kind)).s(string(a.Currency)).i(int64(a.Balance)).i(int64(a.CreditLimit)).u(a.Seq)
	if a.Reserved != 0 { // absent from a record that reserves nothing (and from older ones)
		w = w.i(int64(a.Reserved))
	}
	return w, nil
}

// MarshalBinary encodes a.
func (a Account) MarshalBinary() ([]byte, error) { return a.AppendBinary(nil) }

// UnmarshalBinary decodes a.
func (a *Account) UnmarshalBinary(b []byte) error {
	r := newReader(b, "account")
	v := Account{ID: r.s(), Kind: AccountKind(r.u8()), Currency: Currency(r.s()), Balance: r.nanos(), CreditLimit: r.nanos(), Seq: r.u()}
	if r.err == nil && len(r.b) > 0 {
		if v.Reserved = r.nanos(); v.Reserved == 0 && r.err == nil {
			return fmt.Errorf("%w: account %q: a reservation of 0 is left out", ErrBadState, v.ID)
		}
	}
	if err := r.done(); err != nil {
		return err
	}
	if v.Kind != Prepaid && v.Kind != Postpaid || !v.Currency.Valid() || v.CreditLimit < 0 || v.Reserved < 0 {
		return fmt.Errorf("%w: account %q: bad kind, currency or credit limit", ErrBadState, v.ID)
	}
	*a = v
	return nil
}

// AppendBinary appends the encoding of e.
func (e Entry) AppendBinary(b []byte) ([]byte, error) {
	w := wbuf(append(b, stateVersion))
	return w.s(e.Account).u(e.Seq).u(uint64(e.Kind)).i(int64(e.Amount)).i(e.Time).s(e.Ref), nil
}

// MarshalBinary encodes e.
func (e Entry) MarshalBinary() ([]byte, error) { return e.AppendBinary(nil) }

// UnmarshalBinary decodes e.
func (e *Entry) UnmarshalBinary(b []byte) error {
	r := newReader(b, "account entry")
	v := Entry{Account: r.s(), Seq: r.u(), Kind: EntryKind(r.u8()), Amount: r.nanos(), Time: r.i(), Ref: r.s()}
	if err := r.done(); err != nil {
		return err
	}
	if v.Kind < EntryCharge || v.Kind > EntryAdjust {
		return fmt.Errorf("%w: account entry: unknown kind %d", ErrBadState, v.Kind)
	}
	*e = v
	return nil
}

// AppendBinary appends the encoding of st.
func (st WindowState) AppendBinary(b []byte) ([]byte, error) {
	w := wbuf(append(b, stateVersion))
	o := st.Open
	w = w.i(st.Floor).i(o.Start).i(o.End).s(string(o.Currency)).u(o.Quantity).i(int64(o.Amount)).u(o.Tickets)
	w = w.u(o.Tree.N).u(uint64(len(o.Tree.Peaks)))
	for _, p := range o.Tree.Peaks {
		w = w.u(uint64(len(p)))
		w = append(w, p[:]...)
	}
	// Optional, in order: a window state from before bands ends at the
	// peaks, one from before paywords at the bands, one from before tariff
	// versions at the proven quantity. A later field present writes the
	// earlier ones, empty: no bands, a proven quantity of 0.
	if len(o.Bands) > 0 || o.Proven > 0 || o.Tariff != "" {
		w = w.bands(o.Bands)
	}
	if o.Proven > 0 || o.Tariff != "" {
		w = w.u(o.Proven)
	}
	if o.Tariff != "" {
		w = w.s(o.Tariff)
	}
	return w, nil
}

// MarshalBinary encodes st.
func (st WindowState) MarshalBinary() ([]byte, error) { return st.AppendBinary(nil) }

// UnmarshalBinary decodes st.
func (st *WindowState) UnmarshalBinary(b []byte) error {
	r := newReader(b, "window state")
	var v WindowState
	v.Floor = r.i()
	o := &v.Open
	o.Start, o.End, o.Currency, o.Quantity, o.Amount, o.Tickets = r.i(), r.i(), Currency(r.s()), r.u(), r.nanos(), r.u()
	o.Tree.N = r.u()
	n := r.u()
	if r.err == nil && n > 64 {
		r.fail("too many tree peaks")
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		o.Tree.Peaks = append(o.Tree.Peaks, r.hash())
	}
	if r.err == nil && len(r.b) > 0 {
		o.Bands = r.bands()
		if r.err == nil && len(r.b) > 0 {
			o.Proven = r.u()
			if r.err == nil && len(r.b) > 0 {
				if o.Tariff = r.s(); r.err == nil && o.Tariff == "" {
					r.fail("an empty tariff version") // written as absent: one encoding per state
				}
			}
			if r.err == nil && o.Proven == 0 && o.Tariff == "" {
				r.fail("a proven quantity of 0") // written as absent: one encoding per state
			}
		}
		if r.err == nil && len(o.Bands) == 0 && o.Proven == 0 && o.Tariff == "" {
			r.fail("an empty list of price bands") // written as absent: one encoding per state
		}
		if len(o.Bands) == 0 {
			o.Bands = nil
		}
	}
	if err := r.done(); err != nil {
		return err
	}
	if !o.Tree.valid() || o.Tickets != o.Tree.N || o.Amount < 0 || o.Proven > o.Quantity || (o.End != 0 && o.End <= o.Start) || o.Tickets > math.MaxInt64 {
		return fmt.Errorf("%w: window state is inconsistent", ErrBadState)
	}
	*st = v
	return nil
}

// AppendBinary appends the encoding of f: its id, since and lateness,
// then its window as a window state encodes it (without its version
// byte, and with a floor of 0).
func (f Fold) AppendBinary(b []byte) ([]byte, error) {
	wb, err := WindowState{Open: f.Window}.MarshalBinary()
	if err != nil {
		return nil, err
	}
	w := wbuf(append(b, stateVersion))
	return append(w.u(f.ID).i(f.Since).i(f.Late), wb[1:]...), nil
}

// MarshalBinary encodes f.
func (f Fold) MarshalBinary() ([]byte, error) { return f.AppendBinary(nil) }

// UnmarshalBinary decodes f.
func (f *Fold) UnmarshalBinary(b []byte) error {
	r := newReader(b, "fold")
	v := Fold{ID: r.u(), Since: r.i(), Late: r.i()}
	if r.err != nil {
		return r.err
	}
	var ws WindowState
	if err := ws.UnmarshalBinary(append([]byte{stateVersion}, r.b...)); err != nil {
		return err
	}
	if v.ID == 0 || ws.Floor != 0 || ws.Open.End == 0 || ws.Open.Tickets == 0 {
		return fmt.Errorf("%w: fold %d is inconsistent", ErrBadState, v.ID)
	}
	v.Window = ws.Open
	*f = v
	return nil
}

// StateWriter builds a record in the encoding above, for state types
// kept outside this package (the gateway's device, ticket and sealed
// records), so the state file has one encoding, not two. It is a byte
// slice: each method returns it with the field appended.
type StateWriter []byte

// NewStateWriter starts a record: the version byte.
func NewStateWriter() StateWriter { return StateWriter{stateVersion} }

// Uint appends an unsigned number.
func (s StateWriter) Uint(v uint64) StateWriter { return StateWriter(wbuf(s).u(v)) }

// Int appends a signed number.
func (s StateWriter) Int(v int64) StateWriter { return StateWriter(wbuf(s).i(v)) }

// String appends a length-prefixed string (at most maxStateString bytes
// are read back).
func (s StateWriter) String(v string) StateWriter { return StateWriter(wbuf(s).s(v)) }

// Rest appends bytes with no length: only the last field may be one.
func (s StateWriter) Rest(p []byte) StateWriter { return append(s, p...) }

// StateReader reads a record written by StateWriter. The first error
// sticks: later reads return zero values, and Err (or Done) reports it.
type StateReader struct{ r rbuf }

// NewStateReader starts reading b; what names the record in errors.
func NewStateReader(b []byte, what string) StateReader { return StateReader{r: *newReader(b, what)} }

// Uint reads an unsigned number.
func (s *StateReader) Uint() uint64 { return s.r.u() }

// Int reads a signed number.
func (s *StateReader) Int() int64 { return s.r.i() }

// String reads a length-prefixed string.
func (s *StateReader) String() string { return s.r.s() }

// Rest returns the bytes not read yet and ends the record.
func (s *StateReader) Rest() []byte {
	if s.r.err != nil {
		return nil
	}
	p := s.r.b
	s.r.b = nil
	return p
}

// More reports whether bytes are left to read: a record's optional
// trailing fields.
func (s *StateReader) More() bool { return s.r.err == nil && len(s.r.b) > 0 }

// Fail records an error found by the caller (a value out of range).
func (s *StateReader) Fail(why string) { s.r.fail(why) }

// Err is the first error met.
func (s *StateReader) Err() error { return s.r.err }

// Done checks that the whole record was read and returns the first error.
func (s *StateReader) Done() error { return s.r.done() }

// AppendBinary appends the encoding of g.
func (g Grant) AppendBinary(b []byte) ([]byte, error) {
	w := wbuf(append(b, stateVersion))
	w = w.u(g.ID).u(g.Request).s(g.Device).s(g.Account).s(g.Meter).u(g.Epoch).u(g.Limit).u(g.Threshold).u(g.Granted)
	w = w.i(int64(g.Reserved)).i(int64(g.Held)).u(g.Used).i(int64(g.Paid)).i(int64(g.Charged))
	w = w.i(g.Opened).i(g.Expiry).i(g.LastUse).i(g.Idle).b(g.Continue).u(g.Grace).u(uint64(g.State)).i(g.Closed).i(int64(g.Released))
	return w, nil
}

// MarshalBinary encodes g.
func (g Grant) MarshalBinary() ([]byte, error) { return g.AppendBinary(nil) }

// UnmarshalBinary decodes g and holds it to its invariants (Check).
func (g *Grant) UnmarshalBinary(b []byte) error {
	r := newReader(b, "grant")
	v := Grant{ID: r.u(), Request: r.u(), Device: r.s(), Account: r.s(), Meter: r.s(), Epoch: r.u(), Limit: r.u(), Threshold: r.u(), Granted: r.u()}
	v.Reserved, v.Held, v.Used, v.Paid, v.Charged = r.nanos(), r.nanos(), r.u(), r.nanos(), r.nanos()
	v.Opened, v.Expiry, v.LastUse, v.Idle, v.Continue, v.Grace = r.i(), r.i(), r.i(), r.i(), r.bool(), r.u()
	v.State, v.Closed, v.Released = GrantState(r.u8()), r.i(), r.nanos()
	if err := r.done(); err != nil {
		return err
	}
	if v.State > GrantIdle {
		return fmt.Errorf("%w: grant %d: state %d", ErrBadState, v.ID, v.State)
	}
	if err := v.Check(); err != nil {
		return err
	}
	*g = v
	return nil
}
