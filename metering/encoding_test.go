package metering_test

import (
	"encoding"
	"errors"
	"reflect"
	"testing"

	"github.com/farthing-iot/farthing/metering"
)

type state interface {
	encoding.BinaryMarshaler
}

func sampleStates(t testing.TB) map[string]struct {
	v   state
	new func() encoding.BinaryUnmarshaler
} {
	p := metering.Policy{Length: hour}
	var ws metering.WindowState
	for i, h := range tickets(5) {
		d, err := p.Add(ws, "EUR", metering.Item{Time: int64(i), Quantity: 3, Amount: 1_000, Ticket: h})
		if err != nil {
			t.Fatal(err)
		}
		ws = d.State
	}
	tr := peakTariff(t)
	_, cs, err := tr.Price(metering.ChargeState{}, metering.Usage{From: 1_790_000_000_000, To: 1_790_000_060_000, Quantity: 12345})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]struct {
		v   state
		new func() encoding.BinaryUnmarshaler
	}{
		"meter":   {metering.MeterState{Seq: 9, Epoch: 2, Register: 1 << 60, Time: -5, Started: true}, func() encoding.BinaryUnmarshaler { return new(metering.MeterState) }},
		"charge":  {cs, func() encoding.BinaryUnmarshaler { return new(metering.ChargeState) }},
		"account": {metering.Account{ID: "acct-1", Kind: metering.Postpaid, Currency: "EUR", Balance: -77, CreditLimit: 1e9, Seq: 4}, func() encoding.BinaryUnmarshaler { return new(metering.Account) }},
		"entry":   {metering.Entry{Account: "acct-1", Seq: 4, Kind: metering.EntryCharge, Amount: -77, Time: 1, Ref: "plug-1/9"}, func() encoding.BinaryUnmarshaler { return new(metering.Entry) }},
		"window":  {ws, func() encoding.BinaryUnmarshaler { return new(metering.WindowState) }},
	}
}

func TestStateEncodingRoundTrip(t *testing.T) {
	for name, tc := range sampleStates(t) {
		b, err := tc.v.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != 1 {
			t.Errorf("%s: version byte %d; want 1", name, b[0])
		}
		got := tc.new()
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// The charge state's segment cache is not stored; compare encodings.
		again, _ := reflect.ValueOf(got).Interface().(state).MarshalBinary()
		if string(again) != string(b) {
			t.Errorf("%s: round trip changed the encoding", name)
		}
		if name != "charge" && !reflect.DeepEqual(reflect.ValueOf(got).Elem().Interface(), tc.v) {
			t.Errorf("%s: decoded %+v; want %+v", name, got, tc.v)
		}
		// Every truncation and any trailing byte is refused.
		for i := 0; i < len(b); i++ {
			if err := tc.new().UnmarshalBinary(b[:i]); !errors.Is(err, metering.ErrBadState) {
				t.Fatalf("%s: %d of %d bytes decoded: %v", name, i, len(b), err)
			}
		}
		if err := tc.new().UnmarshalBinary(append(b, 0)); !errors.Is(err, metering.ErrBadState) {
			t.Errorf("%s: trailing byte accepted", name)
		}
		bad := append([]byte{2}, b[1:]...)
		if err := tc.new().UnmarshalBinary(bad); !errors.Is(err, metering.ErrBadState) {
			t.Errorf("%s: version 2 accepted", name)
		}
	}
}

// TestChargeStateSurvivesStorage: pricing from a decoded state gives the
// same charges as pricing from the live one.
func TestChargeStateSurvivesStorage(t *testing.T) {
	tr := peakTariff(t)
	var live, stored metering.ChargeState
	at := int64(1_790_000_000_000)
	for i := 0; i < 500; i++ {
		u := metering.Usage{From: at, To: at + 7*60_000, Quantity: uint64(i * 37 % 1000)}
		a, nextLive, err := tr.Price(live, u)
		if err != nil {
			t.Fatal(err)
		}
		b, nextStored, _ := tr.Price(stored, u)
		if a.Amount != b.Amount {
			t.Fatalf("step %d: live %d, stored %d", i, a.Amount, b.Amount)
		}
		live = nextLive
		enc, _ := nextStored.MarshalBinary()
		stored = metering.ChargeState{}
		if err := stored.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
		at = u.To
	}
}

func TestMeterAdvance(t *testing.T) {
	var s metering.MeterState
	u, s, out, err := s.Advance(1, 0, 1000, 100)
	if out != metering.Baseline || u.Quantity != 0 || err != nil {
		t.Fatalf("first reading: %v %+v %v", out, u, err)
	}
	u, s, out, _ = s.Advance(2, 0, 1500, 200)
	if out != metering.Counted || u.Quantity != 500 || u.From != 100 || u.To != 200 {
		t.Fatalf("second reading: %v %+v", out, u)
	}
	if _, s2, out, _ := s.Advance(2, 0, 1600, 300); out != metering.Duplicate || s2 != s {
		t.Fatalf("repeated seq: %v", out)
	}
	if _, s2, _, err := s.Advance(3, 0, 1499, 300); !errors.Is(err, metering.ErrRegisterBackwards) || s2 != s {
		t.Fatalf("register backwards: %v", err)
	}
	u, s, _, _ = s.Advance(4, 1, 40, 400) // registers restarted: epoch 1
	if u.Quantity != 40 {
		t.Fatalf("new epoch usage %d; want 40", u.Quantity)
	}
	if _, _, _, err := s.Advance(5, 0, 2000, 500); !errors.Is(err, metering.ErrEpochBackwards) {
		t.Fatalf("old epoch: %v", err)
	}
}
