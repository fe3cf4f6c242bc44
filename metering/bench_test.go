package metering_test

import (
	"testing"
	"time"

	"github.com/farthing-iot/farthing/metering"
)

// BenchmarkPrice prices one reading under a tiered time-of-use tariff in
// Europe/Berlin. "steady" is the common case: a reading a minute after the
// last, in the same segment. "edge" crosses a time-of-use edge with every
// reading, so every one needs the time-zone arithmetic.
func BenchmarkPrice(b *testing.B) {
	tr := peakTariff(b)
	start := time.Date(2026, 11, 23, 12, 0, 0, 0, tr.Location).UnixMilli()
	b.Run("steady", func(b *testing.B) {
		var st metering.ChargeState
		at := start
		b.ReportAllocs()
		for b.Loop() {
			ch, next, err := tr.Price(st, metering.Usage{From: at, To: at + 60_000, Quantity: 37})
			if err != nil || ch.Quantity != 37 {
				b.Fatal(err)
			}
			st = next
			if at += 60_000; at > start+4*3600_000 {
				at = start // stay before the 17:00 edge
			}
		}
	})
	b.Run("edge", func(b *testing.B) {
		var st metering.ChargeState
		from := time.Date(2026, 11, 23, 16, 59, 0, 0, tr.Location).UnixMilli()
		b.ReportAllocs()
		for b.Loop() {
			st = metering.ChargeState{Tariff: st.Tariff, Used: st.Used, Rem: st.Rem, PeriodStart: st.PeriodStart} // drop the cache
			_, next, err := tr.Price(st, metering.Usage{From: from, To: from + 120_000, Quantity: 37})
			if err != nil {
				b.Fatal(err)
			}
			st = next
		}
	})
}

// BenchmarkJudge is the per-reading cost of the plausibility rules:
// "advance" is MeterState.Advance alone (what a reading cost before the
// rules), "all rules" judges the same reading under a max rate, a max
// jump, the default fault values and a clock-skew limit.
func BenchmarkJudge(b *testing.B) {
	st := metering.MeterState{Seq: 1, Register: 1000, Time: 1_790_000_000_000, Started: true}
	rules := metering.Rules{MaxRate: metering.Rate{Units: 22000, Per: time.Hour}, MaxJump: 50000, MaxClockSkew: time.Hour}
	b.Run("advance", func(b *testing.B) {
		b.ReportAllocs()
		for i := uint64(0); b.Loop(); i++ {
			if _, _, _, err := st.Advance(2+i, 0, 1037, 1_790_000_060_000); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("all rules", func(b *testing.B) {
		b.ReportAllocs()
		for i := uint64(0); b.Loop(); i++ {
			if _, _, _, v, err := rules.Judge(st, metering.MeterReading{Seq: 2 + i, Epoch: 0, Register: 1037, Time: 1_790_000_060_000}, 1_790_000_060_000); err != nil || v != metering.Plausible {
				b.Fatal(v, err)
			}
		}
	})
}
