package metering_test

import (
	"errors"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/metering"
)

// Each rule holds what breaks it, and the meter state moves as the
// cumulative-register rule in Judge's doc says.
func TestJudgeRules(t *testing.T) {
	const min = 60_000
	last := metering.MeterState{Seq: 5, Register: 10_000, Time: 10 * min, Started: true}
	rules := metering.Rules{MaxRate: metering.Rate{Units: 22_000, Per: time.Hour}, MaxJump: 50_000,
		MaxClockSkew: 15 * time.Minute}
	now := int64(20 * min)
	for _, c := range []struct {
		name     string
		rules    metering.Rules
		seq      uint64
		epoch    uint64
		register uint64
		at       int64
		want     metering.Violation
		held     uint64 // usage
		next     uint64 // register the meter stands at after
	}{
		{"plausible", rules, 6, 0, 13_000, 20 * min, metering.Plausible, 3_000, 13_000},
		// 22 kW for 10 minutes is 3666 Wh: 3667 is one too many.
		{"rate edge", rules, 6, 0, 13_666, 20 * min, metering.Plausible, 3_666, 13_666},
		{"rate", rules, 6, 0, 13_667, 20 * min, metering.ViolationRate, 3_667, 13_667},
		{"jump", metering.Rules{MaxJump: 50_000}, 6, 0, 60_001, 20 * min, metering.ViolationJump, 50_001, 60_001},
		{"fault 32", rules, 6, 0, 4294967295, 20 * min, metering.ViolationFault, 0, 10_000},
		{"fault listed", metering.Rules{Faults: []uint64{16777215}}, 6, 0, 16777215, 20 * min, metering.ViolationFault, 0, 10_000},
		{"fault list replaces defaults", metering.Rules{Faults: []uint64{}}, 6, 0, 4294967295, 20 * min, metering.Plausible, 4294957295, 4294967295},
		{"backwards", rules, 6, 0, 400, 20 * min, metering.ViolationBackwards, 400, 400},
		{"skew", rules, 6, 0, 10_100, 40 * min, metering.ViolationClockSkew, 100, 10_100},
		{"new epoch counts from zero", rules, 6, 1, 100, 20 * min, metering.Plausible, 100, 100},
	} {
		u, next, out, v, err := c.rules.Judge(last, metering.MeterReading{Seq: c.seq, Epoch: c.epoch, Register: c.register, Time: c.at}, now)
		if err != nil || out != metering.Counted || v != c.want || u.Quantity != c.held || next.Register != c.next || next.Seq != c.seq {
			t.Errorf("%s: usage %d, next %+v, %v, %v, %v; want %v with usage %d, register %d", c.name, u.Quantity, next, out, v, err,
				c.want, c.held, c.next)
		}
	}
	// After a fault, the next good reading counts from the last good one.
	_, st, _, _, _ := rules.Judge(last, metering.MeterReading{Seq: 6, Epoch: 0, Register: 4294967295, Time: 15 * min}, now)
	u, _, _, v, _ := rules.Judge(st, metering.MeterReading{Seq: 7, Epoch: 0, Register: 11_000, Time: 20 * min}, now)
	if v != metering.Plausible || u.Quantity != 1_000 || u.From != 10*min {
		t.Errorf("after a fault: %+v, %v; want 1000 units from the last good reading", u, v)
	}
	// A first reading that is a fault sets no baseline.
	if _, st, out, v, _ := rules.Judge(metering.MeterState{}, metering.MeterReading{Seq: 1, Epoch: 0, Register: 1<<64 - 1, Time: 0}, now); st.Started || v != metering.ViolationFault || out != metering.Baseline {
		t.Errorf("fault as the first reading: %+v, %v, %v", st, out, v)
	}
	// backwards: refuse keeps the old behaviour.
	if _, st, _, _, err := (&metering.Rules{RefuseBackwards: true}).Judge(last, metering.MeterReading{Seq: 6, Epoch: 0, Register: 400, Time: 20 * min}, now); !errors.Is(err, metering.ErrRegisterBackwards) || st != last {
		t.Errorf("backwards refused: %+v, %v", st, err)
	}
	if _, _, _, _, err := rules.Judge(metering.MeterState{Seq: 5, Epoch: 2, Register: 1, Started: true}, metering.MeterReading{Seq: 6, Epoch: 1, Register: 5, Time: 0}, now); !errors.Is(err, metering.ErrEpochBackwards) {
		t.Errorf("older epoch: %v", err)
	}
}

// After a held backwards reading, the next reading tells a glitch from a
// restart: at or above the last good register it counts from it, below
// it from the held reading; the held register itself is never charged.
func TestBackwardsToldApart(t *testing.T) {
	const min = 60_000
	var rules metering.Rules
	good := metering.MeterState{Seq: 5, Register: 11_000, Time: 10 * min, Started: true}
	read := func(s metering.MeterState, seq, epoch, reg uint64) (metering.Usage, metering.MeterState, metering.Violation) {
		t.Helper()
		u, next, out, v, err := rules.Judge(s, metering.MeterReading{Seq: seq, Epoch: epoch, Register: reg, Time: int64(seq) * min}, int64(seq)*min)
		if err != nil || out != metering.Counted {
			t.Fatalf("register %d: %v, %v", reg, out, err)
		}
		return u, next, v
	}
	u, held, v := read(good, 6, 0, 5_000)
	if v != metering.ViolationBackwards || u.Quantity != 5_000 || !held.Suspect || held.Good != 11_000 || held.Register != 5_000 {
		t.Fatalf("backwards: %+v %v, state %+v; want held 5000, last good 11000 remembered", u, v, held)
	}
	for _, c := range []struct {
		name       string
		epoch, reg uint64
		want       uint64
	}{
		{"glitch: at or above the last good register", 0, 11_500, 500},
		{"glitch: exactly the last good register", 0, 11_000, 0},
		{"restart: below the last good register", 0, 5_300, 300},
		{"new epoch: from zero", 1, 200, 200},
	} {
		u, next, v := read(held, 7, c.epoch, c.reg)
		if v != metering.Plausible || u.Quantity != c.want || next.Suspect || next.Register != c.reg || u.From != held.Time {
			t.Errorf("%s: %+v %v, state %+v; want %d units, nothing suspect", c.name, u, v, next, c.want)
		}
	}
	// Lower still: held again, the last good register kept.
	u, again, v := read(held, 7, 0, 1_000)
	if v != metering.ViolationBackwards || u.Quantity != 1_000 || again.Good != 11_000 {
		t.Fatalf("backwards twice: %+v %v %+v", u, v, again)
	}
	if u, _, _ := read(again, 8, 0, 12_000); u.Quantity != 1_000 {
		t.Errorf("after two glitches: %d units; want 1000 from the last good register", u.Quantity)
	}
	// A repeated seq and a fault value keep the suspicion.
	if _, s, out, _, _ := rules.Judge(held, metering.MeterReading{Seq: 6, Register: 11_500, Time: 7 * min}, 7*min); out != metering.Duplicate || s != held {
		t.Errorf("a repeat changed the state: %+v %v", s, out)
	}
	_, faulted, _ := read(held, 7, 0, 1<<32-1)
	if u, _, _ := read(faulted, 8, 0, 11_200); u.Quantity != 200 {
		t.Errorf("after a fault: %d units; want 200", u.Quantity)
	}
	// The state survives storage.
	b, _ := held.MarshalBinary()
	var back metering.MeterState
	if err := back.UnmarshalBinary(b); err != nil || back != held || b[0] != 2 {
		t.Errorf("suspect state round trip: %+v, %v (version %d)", back, err, b[0])
	}
	bad := held
	bad.Good = bad.Register
	b, _ = bad.MarshalBinary()
	if err := back.UnmarshalBinary(b); !errors.Is(err, metering.ErrBadState) {
		t.Errorf("a last good register not above the held one decoded: %v", err)
	}
}

func TestParseRules(t *testing.T) {
	set, err := metering.ParseTariffs("t.yaml", []byte(`tariffs:
  - id: ev
    currency: EUR
    price: 0.30
    per: 1000
    plausibility:
      max_rate: 22000/h
      max_jump: 50_000
      faults: [16777215]
      max_clock_skew: 15m
      backwards: refuse
`))
	if err != nil {
		t.Fatal(err)
	}
	r := set.Get("ev").Rules
	if r.MaxRate != (metering.Rate{Units: 22000, Per: time.Hour}) || r.MaxJump != 50000 || len(r.Faults) != 1 ||
		r.MaxClockSkew != 15*time.Minute || !r.RefuseBackwards {
		t.Errorf("rules %+v", r)
	}
	for _, bad := range []string{"max_rate: 5", "max_rate: 5/ms", "backwards: maybe", "max_clock_skew: -1s", "speed: 3"} {
		_, err := metering.ParseTariffs("t.yaml", []byte("tariffs:\n  - id: ev\n    currency: EUR\n    price: 1\n    plausibility:\n      "+bad+"\n"))
		if !errors.Is(err, metering.ErrBadTariff) {
			t.Errorf("%q: %v, want ErrBadTariff", bad, err)
		}
	}
}
