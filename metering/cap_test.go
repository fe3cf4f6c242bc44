package metering_test

import (
	"errors"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/metering"
)

// Caps roll over at local midnight and on the first of the month, also
// across a daylight-saving change, and refuse the charge that would pass
// them without counting it.
func TestCapsAcrossMidnightAndDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	c := metering.Caps{Day: 100, Month: 250, Location: berlin}
	at := func(s string) int64 {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	var s metering.Spent
	s, err = c.Charge(s, 60, at("2026-10-24 22:00"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Charge(s, 41, at("2026-10-24 23:59")); !errors.Is(err, metering.ErrCapReached) {
		t.Fatalf("101 in one day: %v; want ErrCapReached", err)
	}
	// Sunday 25 October 2026 has 25 hours (CEST ends): 00:30 local is a new
	// day although less than 3 hours passed; 23:30 the same local day.
	s, err = c.Charge(s, 90, at("2026-10-25 00:30"))
	if err != nil || s.Day != 90 || s.Month != 150 {
		t.Fatalf("after local midnight: %+v, %v; want a new day of 90, month 150", s, err)
	}
	if _, err := c.Charge(s, 20, at("2026-10-25 23:30")); !errors.Is(err, metering.ErrCapReached) {
		t.Fatalf("the 25-hour day is one day: %v; want ErrCapReached", err)
	}
	s, err = c.Charge(s, 100, at("2026-10-26 08:00"))
	if err != nil || s.Month != 250 {
		t.Fatalf("next day: %+v, %v", s, err)
	}
	if _, err := c.Charge(s, 1, at("2026-10-31 12:00")); !errors.Is(err, metering.ErrCapReached) {
		t.Fatalf("past the month's 250: %v", err)
	}
	if s, err = c.Charge(s, 100, at("2026-11-01 00:00")); err != nil || s.Month != 100 {
		t.Fatalf("a new month: %+v, %v", s, err)
	}
	var back metering.Spent
	b, _ := s.MarshalBinary()
	if err := back.UnmarshalBinary(b); err != nil || back != s {
		t.Fatalf("round trip %+v, %v", back, err)
	}
}
