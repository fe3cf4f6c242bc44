package gateway

import "testing"

func TestGCPercentKeepsAHeadroomFloor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{1 << 20, 600},   // 1 MB live: capped
		{8 << 20, 400},   // 8 MB live: 32 MB of headroom
		{10 << 20, 350},  // rounded up to a step of 50
		{32 << 20, 100},  // as Go's default from here on
		{200 << 20, 100}, // a big registry: the default
	} {
		if got := gcPercent(tc.live); got != tc.want {
			t.Errorf("gcPercent(%d MB) = %d, want %d", tc.live>>20, got, tc.want)
		}
		if got := gcPercent(tc.live); tc.live > 0 && uint64(got)*tc.live/100 < min(gcHeadroom, uint64(600)*tc.live/100) {
			t.Errorf("gcPercent(%d MB) = %d leaves less than the headroom", tc.live>>20, got)
		}
	}
}
