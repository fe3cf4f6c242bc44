package metering

import "fmt"

// MeterState is what the gateway remembers of one (device, meter): the
// last reading it charged. The zero value means no reading yet.
type MeterState struct {
	Seq      uint64 // seq of the ticket of the last reading applied
	Epoch    uint64 // register epoch of Register
	Register uint64 // last cumulative register charged
	Time     int64  // Unix ms of the last reading
	Started  bool   // a reading has been applied
	// Suspect is set while the last reading, held because it went back
	// in its epoch, cannot yet be told from a glitch or a restart; Good
	// is then the register before it (the last good one). The next
	// reading tells them apart: see Rules.Judge.
	Suspect bool
	Good    uint64
}

// Outcome says what a reading did to a meter.
type Outcome uint8

// Outcomes of MeterState.Advance.
const (
	// Counted: the reading is newer; its usage is the register's increase.
	Counted Outcome = iota
	// Baseline: the first reading of a meter; it sets the starting register
	// and is charged nothing (a register may count from before the device
	// was registered).
	Baseline
	// Duplicate: the ticket's seq is not newer than the last one applied;
	// the reading changes nothing. Cumulative readings make this safe: a
	// newer ticket already carried everything it could.
	Duplicate
)

func (o Outcome) String() string {
	switch o {
	case Counted:
		return "counted"
	case Baseline:
		return "baseline"
	case Duplicate:
		return "duplicate"
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// Advance applies a reading (ticket seq, register epoch, cumulative
// register, time) and returns the usage since the last reading, the new
// state and what happened. s itself is not changed.
//
// A register lower than the last one in the same epoch is
// ErrRegisterBackwards, an older epoch ErrEpochBackwards: those tickets are
// refused and the state stays as it was. In a newer epoch the registers
// restarted from zero, so the usage is the new register itself, counted
// from the time of the last reading.
func (s MeterState) Advance(seq, epoch, register uint64, timeMs int64) (Usage, MeterState, Outcome, error) {
	next := MeterState{Seq: seq, Epoch: epoch, Register: register, Time: timeMs, Started: true}
	if !s.Started {
		return Usage{From: timeMs, To: timeMs}, next, Baseline, nil
	}
	if seq <= s.Seq {
		return Usage{}, s, Duplicate, nil
	}
	u := Usage{From: s.Time, To: timeMs}
	switch {
	case epoch < s.Epoch:
		return Usage{}, s, Counted, fmt.Errorf("%w: epoch %d after %d", ErrEpochBackwards, epoch, s.Epoch)
	case epoch > s.Epoch:
		u.Quantity = register
	case register < s.Register:
		return Usage{}, s, Counted, fmt.Errorf("%w: %d after %d in epoch %d", ErrRegisterBackwards, register, s.Register, epoch)
	default:
		u.Quantity = register - s.Register
	}
	return u, next, Counted, nil
}
