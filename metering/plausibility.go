package metering

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Rules are a meter's plausibility rules: what a reading may do before it
// is held for an operator instead of charged. The zero value holds only
// readings that go backwards and the DefaultFaults.
type Rules struct {
	// MaxRate is the most units the meter can count per unit of device
	// time since its last reading (a 22 kW charger counting Wh: 22000 per
	// hour); zero is no limit. The elapsed time counts as at least one
	// second, so two readings with one time stamp are not a division by zero.
	MaxRate Rate
	// MaxJump is the most units one reading may add; 0 is no limit.
	MaxJump uint64
	// Faults are register values the meter sends as error codes; nil is
	// DefaultFaults, an empty non-nil slice none.
	Faults []uint64
	// MaxClockSkew holds a reading whose device time is further than
	// this from the gateway's clock; 0 is none (the gateway's own limit,
	// which refuses, still applies).
	MaxClockSkew time.Duration
	// RefuseBackwards refuses a register that went back in one epoch (the
	// receipt says register_backwards, nothing is committed) instead of
	// holding it.
	RefuseBackwards bool
}

// DefaultFaults are the register values held as meter faults unless a
// meter's rules list others: all ones in 32 and in 64 bits, the error
// values of common meter registers (a kWh register of 4294967.295).
var DefaultFaults = []uint64{1<<32 - 1, 1<<64 - 1}

// Rate is Units per Per.
type Rate struct {
	Units uint64
	Per   time.Duration
}

// In is the most units r lets a meter count in d (rounded down, at
// least 1): what a grant valid for d may grant.
func (r Rate) In(d time.Duration) uint64 {
	hi, lo := bits.Mul64(r.Units, uint64(max(d, 0)))
	if hi >= uint64(r.Per) {
		return 1<<64 - 1
	}
	q, _ := bits.Div64(hi, lo, uint64(r.Per))
	return max(q, 1)
}

// IsZero reports whether r sets no limit.
func (r Rate) IsZero() bool { return r.Units == 0 || r.Per <= 0 }

func (r Rate) String() string {
	if r.IsZero() {
		return "none"
	}
	return fmt.Sprintf("%d/%s", r.Units, r.Per)
}

// Violation is the plausibility rule a reading broke.
type Violation uint8

// Violations, in the order Judge checks them.
const (
	Plausible Violation = iota
	// ViolationFault: the register is one of the fault values.
	ViolationFault
	// ViolationBackwards: the register went back in the same epoch.
	ViolationBackwards
	// ViolationClockSkew: the device time is too far from the gateway's.
	ViolationClockSkew
	// ViolationJump: the usage is more than MaxJump.
	ViolationJump
	// ViolationRate: the usage is more than MaxRate allows for the time
	// since the last reading.
	ViolationRate
)

var violationNames = [...]string{"plausible", "register_fault", "register_backwards", "clock_skew", "register_jump", "rate_too_high"}

func (v Violation) String() string {
	if int(v) < len(violationNames) {
		return violationNames[v]
	}
	return fmt.Sprintf("violation(%d)", v)
}

// MeterReading is one reading of a meter as a ticket reports it: the
// ticket's seq and register epoch, the cumulative register, and the
// device's time (Unix ms).
type MeterReading struct {
	Seq, Epoch, Register uint64
	Time                 int64
}

// Judge applies a reading (ticket seq, register epoch, cumulative
// register, device time) to meter state s as Advance does, then checks the
// rules; now is the gateway's clock (Unix ms). It returns the usage, the
// new state, what the reading did and the rule it broke, if any.
//
// The rule for cumulative registers, so that held usage is never lost and
// never charged twice:
//
//   - A reading that breaks a rule is held whole: its usage (register
//     increase, as for any reading) is kept apart for an operator, and the
//     meter state moves to the reading like an accepted one, so the next
//     reading counts only from it. Releasing the held usage charges it once;
//     voiding it drops it; either way later readings never see it again.
//   - A fault value is not a reading: the meter state keeps its last good
//     register and time (only the seq moves), and the usage held is 0. The
//     next good reading counts everything since the last good one.
//   - A register that went back in one epoch cannot be told from a
//     glitch (a bad read, a bit flip: the meter is really still at its
//     last good register) or a restart from zero. It is held as a restart
//     (the usage held is the new register), and the meter remembers both
//     registers (Suspect, Good). The next reading in the epoch tells them
//     apart: one at or above the last good register was a glitch and is
//     counted from the last good register; one below it is a restart and
//     is counted from the held reading. Either way what cannot be told
//     apart (the held register) stays held for an operator and is never
//     charged by itself: an operator who knows the meter was replaced
//     releases it; one who sees a glitch voids it. A reading lower still
//     is held the same way, the last good register kept.
//   - A first reading (a baseline) charges nothing; only a fault value
//     holds it, and the meter then stays without a baseline.
//
// Errors are Advance's: an older epoch, or a register back with
// RefuseBackwards.
func (r *Rules) Judge(s MeterState, rd MeterReading, now int64) (Usage, MeterState, Outcome, Violation, error) {
	seq, epoch, register, timeMs := rd.Seq, rd.Epoch, rd.Register, rd.Time
	if r.isFault(register) {
		if !s.Started {
			return Usage{From: timeMs, To: timeMs}, s, Baseline, ViolationFault, nil
		}
		if seq <= s.Seq {
			return Usage{}, s, Duplicate, Plausible, nil
		}
		if epoch < s.Epoch {
			return Usage{}, s, Counted, Plausible, fmt.Errorf("%w: epoch %d after %d", ErrEpochBackwards, epoch, s.Epoch)
		}
		next := s
		next.Seq = seq
		return Usage{From: timeMs, To: timeMs}, next, Counted, ViolationFault, nil
	}
	u, next, out, err := s.countFrom(epoch, register).Advance(seq, epoch, register, timeMs)
	if errors.Is(err, ErrRegisterBackwards) && !r.RefuseBackwards {
		good := s.Register
		if s.Suspect {
			good = s.Good
		}
		return Usage{From: s.Time, To: timeMs, Quantity: register},
			MeterState{Seq: seq, Epoch: epoch, Register: register, Time: timeMs, Started: true, Suspect: true, Good: good},
			Counted, ViolationBackwards, nil
	}
	if err != nil || out != Counted {
		if out == Duplicate || err != nil {
			next = s
		}
		return u, next, out, Plausible, err
	}
	if sk := r.MaxClockSkew.Milliseconds(); sk > 0 && (timeMs > now+sk || timeMs < now-sk) {
		return u, next, out, ViolationClockSkew, nil
	}
	if r.MaxJump > 0 && u.Quantity > r.MaxJump {
		return u, next, out, ViolationJump, nil
	}
	if !r.MaxRate.IsZero() && r.tooFast(u) {
		return u, next, out, ViolationRate, nil
	}
	return u, next, out, Plausible, nil
}

// countFrom is the state a reading in epoch with register counts from:
// after a held backwards reading (Suspect), a register at or above the
// last good one in the same epoch counts from the last good one (the held
// reading was a glitch), any other from the held reading (a restart).
func (s MeterState) countFrom(epoch, register uint64) MeterState {
	if !s.Suspect {
		return s
	}
	base := s
	if epoch == s.Epoch && register >= s.Good {
		base.Register = s.Good
	}
	base.Suspect, base.Good = false, 0
	return base
}

// tooFast reports whether u.Quantity > Units × elapsed / Per, in 128
// bits: Quantity × Per > Units × elapsed.
func (r *Rules) tooFast(u Usage) bool {
	elapsed := u.To - u.From
	if elapsed < 1000 {
		elapsed = 1000
	}
	lh, ll := bits.Mul64(u.Quantity, uint64(r.MaxRate.Per.Milliseconds()))
	rh, rl := bits.Mul64(r.MaxRate.Units, uint64(elapsed))
	return lh > rh || (lh == rh && ll > rl)
}

func (r *Rules) isFault(register uint64) bool {
	faults := r.Faults
	if faults == nil {
		faults = DefaultFaults
	}
	for _, f := range faults {
		if f == register {
			return true
		}
	}
	return false
}

// Validate checks the rules.
func (r *Rules) Validate() error {
	if r.MaxRate.Units > 0 && r.MaxRate.Per < time.Second {
		return fmt.Errorf("%w: max_rate: the time unit must be at least a second", ErrBadTariff)
	}
	if r.MaxClockSkew < 0 {
		return fmt.Errorf("%w: max_clock_skew is negative", ErrBadTariff)
	}
	return nil
}

// Rules are written in YAML, in a tariff (for every meter it prices) or
// in a device's entry (for one of its meters, replacing the tariff's):
//
//	plausibility:
//	  max_rate: 22000/h        # units per s, min or h (or a duration: 22000/10m)
//	  max_jump: 50000          # most units one reading adds
//	  faults: [4294967295, 16777215]   # register error values; default: all ones in 32 and 64 bits
//	  max_clock_skew: 15m      # device time further from the gateway's is held
//	  backwards: hold          # hold (default) or refuse a register that goes back

// UnmarshalYAML reads rules written as above; unknown fields are errors.
func (r *Rules) UnmarshalYAML(n *yaml.Node) error {
	p := &tariffParser{file: "plausibility"}
	rules, err := p.rules(n, "plausibility")
	if err != nil {
		return err
	}
	*r = rules
	return nil
}

// MarshalYAML writes the rules as UnmarshalYAML reads them.
func (r Rules) MarshalYAML() (any, error) {
	m := map[string]any{}
	if !r.MaxRate.IsZero() {
		m["max_rate"] = r.MaxRate.String()
	}
	if r.MaxJump > 0 {
		m["max_jump"] = r.MaxJump
	}
	if r.Faults != nil {
		m["faults"] = r.Faults
	}
	if r.MaxClockSkew > 0 {
		m["max_clock_skew"] = r.MaxClockSkew.String()
	}
	if r.RefuseBackwards {
		m["backwards"] = "refuse"
	}
	return m, nil
}

func (p *tariffParser) rules(n *yaml.Node, path string) (Rules, error) {
	var r Rules
	err := p.fields(n, path, map[string]func(*yaml.Node) error{
		"max_rate": func(v *yaml.Node) error {
			rate, err := ParseRate(v.Value)
			if err != nil || v.Kind != yaml.ScalarNode {
				return p.errf(v, path+".max_rate", "%q: want UNITS/UNIT, such as 22000/h", v.Value)
			}
			r.MaxRate = rate
			return nil
		},
		"max_jump": func(v *yaml.Node) error { return p.uint(v, path+".max_jump", &r.MaxJump) },
		"faults": func(v *yaml.Node) error {
			if err := p.kind(v, path+".faults", yaml.SequenceNode); err != nil {
				return err
			}
			r.Faults = make([]uint64, len(v.Content))
			for i, f := range v.Content {
				if err := p.uint(f, fmt.Sprintf("%s.faults[%d]", path, i), &r.Faults[i]); err != nil {
					return err
				}
			}
			return nil
		},
		"max_clock_skew": func(v *yaml.Node) error {
			d, err := time.ParseDuration(v.Value)
			if err != nil || d <= 0 {
				return p.errf(v, path+".max_clock_skew", "%q: want a duration above 0, such as 15m", v.Value)
			}
			r.MaxClockSkew = d
			return nil
		},
		"backwards": func(v *yaml.Node) error {
			switch v.Value {
			case "hold":
			case "refuse":
				r.RefuseBackwards = true
			default:
				return p.errf(v, path+".backwards", "%q: want hold or refuse", v.Value)
			}
			return nil
		},
	})
	if err == nil {
		if verr := r.Validate(); verr != nil {
			return r, p.errf(n, path, "%v", verr)
		}
	}
	return r, err
}

// ParseRate reads "UNITS/UNIT": UNIT is s, min, h or a Go duration
// ("22000/h", "6/s", "500/10m").
func ParseRate(s string) (Rate, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("%w: rate %q: want UNITS/UNIT", ErrBadTariff, s)
	}
	units, err := strconv.ParseUint(strings.ReplaceAll(strings.TrimSpace(num), "_", ""), 10, 64)
	if err != nil || units == 0 {
		return Rate{}, fmt.Errorf("%w: rate %q: want a whole number of units above 0", ErrBadTariff, s)
	}
	var per time.Duration
	switch unit = strings.TrimSpace(unit); unit {
	case "s":
		per = time.Second
	case "min":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		if per, err = time.ParseDuration(unit); err != nil || per < time.Second {
			return Rate{}, fmt.Errorf("%w: rate %q: the unit is s, min, h or a duration of at least 1s", ErrBadTariff, s)
		}
	}
	return Rate{Units: units, Per: per}, nil
}
