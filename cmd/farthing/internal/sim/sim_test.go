package sim

import (
	"testing"
	"time"
)

// The latency by slice: each receipt counts in the slice it came in, a
// last slice shorter than half of one is left out, and a run shorter than
// two slices has none.
func TestSlices(t *testing.T) {
	start := time.Unix(1000, 0)
	var lat []time.Duration
	var at []int64
	add := func(offset, l time.Duration) {
		lat, at = append(lat, l), append(at, start.Add(offset).UnixNano())
	}
	for i := 0; i < 100; i++ {
		add(time.Duration(i)*10*time.Millisecond, time.Millisecond) // slice 0: 1 ms each
	}
	for i := 0; i < 99; i++ {
		add(time.Second+time.Duration(i)*10*time.Millisecond, 2*time.Millisecond)
	}
	add(1500*time.Millisecond, 50*time.Millisecond) // slice 1's tail
	add(2100*time.Millisecond, time.Second)         // in the short last slice: left out
	s := slices(lat, at, start, 2200*time.Millisecond, time.Second)
	if len(s) != 2 {
		t.Fatalf("%d slices, want 2: %+v", len(s), s)
	}
	if s[0].Receipts != 100 || s[0].P99 != time.Millisecond || s[1].Receipts != 100 || s[1].P50 != 2*time.Millisecond || s[1].P99 != 50*time.Millisecond {
		t.Fatalf("slices %+v", s)
	}
	if s := slices(lat, at, start, 1200*time.Millisecond, time.Second); s != nil {
		t.Fatalf("a run of 1.2 slices has slices: %+v", s)
	}
}
