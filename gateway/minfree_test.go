package gateway

import "testing"

// The default free-space floor scales down on a small partition, so a
// 128 MiB card is not refused from the first ticket.
func TestMinFreeFloorScales(t *testing.T) {
	for _, tc := range []struct{ configured, size, want int64 }{
		{0, 32 << 30, 64 << 20},          // a 32 GiB card: 64 MiB
		{0, 1280 << 20, 64 << 20},        // 1.25 GiB: 5% is 64 MiB
		{0, 128 << 20, (128 << 20) / 20}, // 128 MiB: 6.4 MiB
		{0, 0, 0},
		{100 << 20, 128 << 20, 100 << 20}, // configured wins
	} {
		if got := minFreeFor(tc.configured, tc.size); got != tc.want {
			t.Errorf("minFreeFor(%d, %d) = %d; want %d", tc.configured, tc.size, got, tc.want)
		}
	}
}
