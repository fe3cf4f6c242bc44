package provider

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/protocol"
)

// BenchmarkPayoutRun1M times one payout over 1,000,000 aggregates (10
// gateways' streams of 100,000) and reports its memory:
//
//	go test ./provider -run '^$' -bench PayoutRun1M -benchtime 1x
//
// The wallet is filled through the booking transaction (book), 10,000
// aggregates per commit; signatures are not checked here (they are
// Accept's, per aggregate, before the books).
func BenchmarkPayoutRun1M(b *testing.B) {
	const gateways, perStream = 10, 100_000
	pol := map[string]PayoutPolicy{"stadtwerk": {Provider: "stadtwerk", Threshold: "10.00 EUR", FeeBasisPoints: 250,
		Payees: []PayeeWeight{{ID: "creator", Weight: 70}, {ID: "publisher", Weight: 30}}}}
	for range b.N {
		b.StopTimer()
		r, err := Open(filepath.Join(b.TempDir(), "r.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		r.books.(boltBooks).db.NoSync = true // the fill only; the payout below commits with fsync
		for g := range gateways {
			var kid [protocol.KeyIDLen]byte
			kid[0] = byte(g + 1)
			s, _ := protocol.StreamOf(kid[:], 1)
			for from := uint64(1); from <= perStream; from += 10_000 {
				err := r.books.(boltBooks).db.Update(func(tx *bolt.Tx) error {
					for seq := from; seq < from+10_000; seq++ {
						a := &protocol.Aggregate{Gateway: fmt.Sprintf("gw-%d", g), Provider: "stadtwerk", Account: "acct-1",
							Currency: "EUR", Seq: seq, Epoch: 1, Amount: 1_234_567, Quantity: 1, Tickets: 1}
						if _, err := book(tx, s, Record{Gateway: a.Gateway, Seq: seq, Epoch: 1, Agg: a}, kid[:]); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		r.books.(boltBooks).db.NoSync = false
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		start := time.Now()
		made, err := r.RunPayouts(context.Background(), pol, time.Now())
		elapsed := time.Since(start)
		b.StopTimer()
		runtime.ReadMemStats(&after)
		if err != nil || len(made) != 1 || made[0].Count != gateways*perStream {
			b.Fatalf("made %d payouts (%v)", len(made), err)
		}
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		b.ReportMetric(elapsed.Seconds(), "s/payout")
		b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), "MB-alloc/payout")
		b.ReportMetric(float64(ru.Maxrss)/1024, "MB-maxrss")
		ws, err := r.Wallets(context.Background())
		if err != nil || !ws[0].Balanced || ws[0].Pending != 0 {
			b.Fatalf("wallet after the payout: %+v (%v)", ws, err)
		}
		r.Close()
		b.StartTimer()
	}
}
