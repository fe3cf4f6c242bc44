package provider_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
	"github.com/farthing-iot/farthing/provider/pgbooks"
)

// BenchmarkAccept books distinct aggregates from one gateway: decode,
// verify, the stream checks and one bbolt commit each.
func BenchmarkAccept(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, _ := protocol.NewEd25519Signer(priv)
	r, err := provider.Open(filepath.Join(b.TempDir(), "r.db"), provider.Keys(pub))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	msgs := make([][]byte, b.N)
	var enc protocol.Encoder
	for i := range msgs {
		a := protocol.Aggregate{Gateway: "gw-bench", Seq: uint64(i + 1), Provider: "p", Account: "a", Meter: "m",
			WindowStart: 1, WindowEnd: 2, Quantity: 10, Amount: 100, Currency: "EUR", Tickets: 1, MerkleRoot: make([]byte, 32)}
		if msgs[i], err = enc.AppendAggregate(nil, &a, s); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range msgs {
		if _, err := r.Accept(context.Background(), msgs[i]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBookingRate is aggregates booked per second by one receiver and
// by three working at once, on the embedded file (one file each: receivers
// sharing a JetStream consumer each book their share) and on PostgreSQL
// (one database for all). Every booking is durable when Accept returns.
// Run: go test ./provider -run '^$' -bench BookingRate -benchtime 3000x
func BenchmarkBookingRate(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, _ := protocol.NewEd25519Signer(priv)
	for _, store := range []string{"bbolt", "postgres"} {
		for _, n := range []int{1, 3} {
			b.Run(fmt.Sprintf("%s/receivers=%d", store, n), func(b *testing.B) {
				msgs := make([][]byte, b.N)
				var enc protocol.Encoder
				for i := range msgs {
					a := protocol.Aggregate{Gateway: "gw-bench", Seq: uint64(i + 1), Epoch: 7, Provider: "p", Account: "a", Meter: "m",
						WindowStart: 1, WindowEnd: 2, Quantity: 10, Amount: 100, Currency: "EUR", Tickets: 1, MerkleRoot: make([]byte, 32)}
					msgs[i], _ = enc.AppendAggregate(nil, &a, s)
				}
				var url string
				if store == "postgres" {
					var err error
					if url, err = cluster.NewDatabase(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				rs := make([]*provider.Receiver, n)
				for i := range rs {
					var err error
					if store == "bbolt" {
						rs[i], err = provider.Open(filepath.Join(b.TempDir(), "r.db"), provider.Keys(pub))
					} else {
						rs[i], err = pgbooks.Open(context.Background(), url, provider.Keys(pub), pgbooks.Options{MaxConns: 4})
					}
					if err != nil {
						b.Fatal(err)
					}
					defer rs[i].Close()
				}
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for w, r := range rs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := w; i < len(msgs); i += n {
							if _, err := r.Accept(context.Background(), msgs[i]); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "aggregates/s")
			})
		}
	}
}
