package metering

import (
	"fmt"
	"time"
)

// Caps bound what an account (or a device) may spend per calendar day and
// per calendar month, in a time zone. Zero means no cap.
type Caps struct {
	Day, Month Nanos
	// Location is where days and months begin; nil is UTC.
	Location *time.Location
}

// Spent is what was spent in the current day and month, each with the
// Unix ms at which its period began. Periods roll over by the calendar
// of Caps.Location, across daylight-saving changes too (a day is 23 or
// 25 hours then).
type Spent struct {
	DayStart, MonthStart int64
	Day, Month           Nanos
}

// Charge adds amount, spent at now (Unix ms), to s: it starts a new day or
// month when now is past the stored one, then refuses with ErrCapReached
// a charge that would pass a cap. On a refusal s is unchanged.
func (c Caps) Charge(s Spent, amount Nanos, now int64) (Spent, error) {
	next := c.roll(s, now)
	var err error
	if next.Day, err = next.Day.Add(amount); err != nil {
		return s, err
	}
	if next.Month, err = next.Month.Add(amount); err != nil {
		return s, err
	}
	if c.Day > 0 && next.Day > c.Day {
		return s, fmt.Errorf("%w: %d of the day's %d spent, this charge is %d", ErrCapReached, next.Day-amount, c.Day, amount)
	}
	if c.Month > 0 && next.Month > c.Month {
		return s, fmt.Errorf("%w: %d of the month's %d spent, this charge is %d", ErrCapReached, next.Month-amount, c.Month, amount)
	}
	return next, nil
}

// roll returns s with a new day or month started when now is past the
// stored one.
func (c Caps) roll(s Spent, now int64) Spent {
	loc := c.Location
	if loc == nil {
		loc = time.UTC
	}
	t := time.UnixMilli(now).In(loc)
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc).UnixMilli()
	month := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, loc).UnixMilli()
	if s.DayStart != day {
		s.DayStart, s.Day = day, 0
	}
	if s.MonthStart != month {
		s.MonthStart, s.Month = month, 0
	}
	return s
}

// Room is what may still be spent at now after s under the caps (0 when
// one is reached); ok is false when c caps nothing.
func (c Caps) Room(s Spent, now int64) (room Nanos, ok bool) {
	s = c.roll(s, now)
	room = 1<<63 - 1
	if c.Day > 0 {
		room, ok = min(room, max(c.Day-s.Day, 0)), true
	}
	if c.Month > 0 {
		room, ok = min(room, max(c.Month-s.Month, 0)), true
	}
	return room, ok
}

// AppendBinary encodes s in the state encoding.
func (s Spent) AppendBinary(b []byte) ([]byte, error) {
	w := wbuf(append(b, stateVersion))
	return w.i(s.DayStart).i(int64(s.Day)).i(s.MonthStart).i(int64(s.Month)), nil
}

// MarshalBinary encodes s.
func (s Spent) MarshalBinary() ([]byte, error) { return s.AppendBinary(nil) }

// UnmarshalBinary decodes s.
func (s *Spent) UnmarshalBinary(b []byte) error {
	r := newReader(b, "spent")
	v := Spent{DayStart: r.i(), Day: r.nanos(), MonthStart: r.i(), Month: r.nanos()}
	if err := r.done(); err != nil {
		return err
	}
	*s = v
	return nil
}
