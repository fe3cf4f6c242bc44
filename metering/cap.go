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
	loc := c.Location
	if loc == nil {
		loc = time.UTC
	}
	t := time.UnixMilli(now).In(loc)
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc).UnixMilli()
	month := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, loc).UnixMilli()
	next := s
	if next.DayStart != day {
		next.DayStart, next.Day = day, 0
	}
	if next.MonthStart != month {
		next.MonthStart, next.Month = month, 0
	}
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
