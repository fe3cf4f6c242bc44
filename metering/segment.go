package metering

import "time"

// A segment is a stretch of time in which the price rules do not change:
// one billing period, and inside or outside one time-of-use window. Usage
// is split into segments before it is priced.
type segment struct {
	from, end   int64 // Unix ms: the segment holds [from, end)
	periodStart int64 // Unix ms, start of the billing period (0 with PeriodNone)
	window      int8  // index into Tariff.Windows, or -1
}

// endOfTime bounds segments that never end (no period, no windows).
const endOfTime = int64(1) << 62

// segmentAt returns the segment that holds instant ms. Times are local in
// the tariff's zone; a day that is 23 or 25 hours long (daylight saving)
// simply has a shorter or longer segment. It allocates nothing.
func (t *Tariff) segmentAt(ms int64) segment {
	s := segment{from: ms, end: endOfTime, window: -1}
	if t.Period == PeriodNone && len(t.Windows) == 0 {
		return s
	}
	lt := time.UnixMilli(ms).In(t.Location)
	y, mo, d := lt.Date()
	wd := lt.Weekday()
	minute := uint16(lt.Hour()*60 + lt.Minute())
	loc := t.Location
	at := func(y int, mo time.Month, d int, min uint16) int64 {
		return time.Date(y, mo, d, int(min/60), int(min%60), 0, 0, loc).UnixMilli()
	}
	nextMidnight := at(y, mo, d+1, 0)

	switch t.Period {
	case PeriodDay:
		s.periodStart, s.end = at(y, mo, d, 0), nextMidnight
	case PeriodWeek:
		back := (int(wd) + 6) % 7 // days since Monday
		s.periodStart, s.end = at(y, mo, d-back, 0), at(y, mo, d-back+7, 0)
	case PeriodMonth:
		s.periodStart, s.end = at(y, mo, 1, 0), at(y, mo+1, 1, 0)
	case PeriodYear:
		s.periodStart, s.end = at(y, 1, 1, 0), at(y+1, 1, 1, 0)
	}

	if len(t.Windows) > 0 {
		// Window edges are within one local day: the segment ends at the
		// next edge today, or at midnight, whichever is first.
		edge := uint16(24 * 60)
		for i, w := range t.Windows {
			if w.Weekdays&(1<<wd) == 0 {
				continue
			}
			switch {
			case minute >= w.From && minute < w.To:
				s.window = int8(i)
				edge = min(edge, w.To)
			case w.From > minute:
				edge = min(edge, w.From)
			}
		}
		e := nextMidnight
		if edge < 24*60 {
			e = at(y, mo, d, edge)
		}
		// In a daylight-saving gap a wall-clock edge may not exist and
		// time.Date may place it before ms: never end a segment at or
		// before its start.
		if e <= ms {
			e = nextMidnight
		}
		s.end = min(s.end, e)
	}
	if s.end <= ms {
		s.end = ms + 1
	}
	return s
}
