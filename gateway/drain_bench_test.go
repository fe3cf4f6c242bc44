package gateway_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// BenchmarkDrainAfterOutage: b.N aggregates pile up in the outbox while
// the provider's HTTP receiver is away; then it comes back and the timer
// runs while the forwarder drains them (each sent, confirmed by the
// receiver's fsync'd commit, and recorded in the gateway's). The drain
// rate bound is lifted to measure the forwarder itself.
func BenchmarkDrainAfterOutage(b *testing.B) {
	hs := httptest.NewUnstartedServer(nil)
	tg := startGateway(b, []devSpec{{"plug-1", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: time.Millisecond}} // every ticket seals the last window
		c.Upstreams = []gateway.UpstreamConfig{{Name: "h", Type: "http", URL: "http://" + hs.Listener.Addr().String() + "/aggregates"}}
		c.Forward = gateway.ForwardSettings{DrainRate: 1e6, BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond, MinConnected: time.Millisecond}
	})
	r, err := provider.Open(filepath.Join(b.TempDir(), "r.db"), provider.Keys(gatewayPub(b, tg)))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	signer, _ := tg.secrets["plug-1"].Signer()
	var enc protocol.Encoder
	t0 := now()
	for i := 0; i <= b.N+1; i++ {
		tk, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: "plug-1", Seq: uint64(i + 1), Time: t0 + uint64(2*i),
			Readings: []protocol.Reading{{Meter: "energy_wh", Register: uint64(10 * i)}}}, signer)
		if res := tg.Ingest().Submit(context.Background(), entrance.Message{Device: "plug-1", Payload: tk, Transport: "bench"}); res.Receipt.Status != protocol.StatusAccepted {
			b.Fatalf("ticket %d: %+v", i, res.Receipt)
		}
	}
	rep, _ := tg.Books().Inspect(nil)
	want := rep.Outbox
	b.ResetTimer()
	hs.Config.Handler = r.Handler(nil, provider.ReadAccess{})
	hs.Start()
	defer hs.Close()
	for {
		rep, _ = tg.Books().Inspect(nil)
		if rep.Outbox == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	// The timer may seal the last open window meanwhile: compare with the
	// final count.
	if got := r.Stats().Accepted; int(got) != len(rep.Sealed) || want < b.N {
		b.Fatalf("receiver booked %d of %d sealed (%d waiting at the start)", got, len(rep.Sealed), want)
	}
	b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "aggregates/s")
}

// benchSubmitters is how many devices submit at once in the ingest
// benchmarks; each has one ticket in flight, as a device behind the
// embedded broker does.
var benchSubmitters = 16

// BenchmarkIngestForwarding compares ingest throughput without an upstream
// and with one in the worst case for the forwarder: 1 ms windows, so every
// ticket seals an aggregate that is signed, stored and forwarded while
// tickets keep coming. 16 devices submit concurrently; no MQTT, so the
// pipeline and store are what is measured.
func BenchmarkIngestForwarding(b *testing.B) {
	for _, mode := range []string{"no-upstream", "forwarding-every-ticket"} {
		b.Run(mode, func(b *testing.B) {
			hs := httptest.NewUnstartedServer(nil)
			var devs []devSpec
			for i := 0; i < benchSubmitters; i++ {
				devs = append(devs, devSpec{fmt.Sprintf("d%02d", i), "hmac", "fleet"})
			}
			tg := startGateway(b, devs, func(c *gateway.Config) {
				c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: time.Hour}}
				if mode != "no-upstream" {
					c.Providers[0].Window = time.Millisecond
					c.Upstreams = []gateway.UpstreamConfig{{Name: "h", Type: "http", URL: "http://" + hs.Listener.Addr().String() + "/aggregates"}}
					c.Forward = gateway.ForwardSettings{DrainRate: 1e6}
				}
			})
			r, _ := provider.Open(filepath.Join(b.TempDir(), "r.db"), provider.Keys(gatewayPub(b, tg)))
			defer r.Close()
			hs.Config.Handler = r.Handler(nil, provider.ReadAccess{})
			hs.Start()
			defer hs.Close()
			per := b.N/len(devs) + 2
			tickets := make([][][]byte, len(devs))
			t0 := now()
			for i, d := range devs {
				signer, _ := tg.secrets[d.id].Signer()
				var enc protocol.Encoder
				for k := 0; k < per; k++ {
					tk, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: d.id, Seq: uint64(k + 1), Time: t0 + uint64(2*k),
						Readings: []protocol.Reading{{Meter: "energy_wh", Register: uint64(7 * k)}}}, signer)
					tickets[i] = append(tickets[i], tk)
				}
			}
			b.ResetTimer()
			var wg sync.WaitGroup
			for i, d := range devs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for _, tk := range tickets[i] {
						if res := tg.Ingest().Submit(context.Background(), entrance.Message{Device: d.id, Payload: tk, Transport: "bench"}); res.Receipt.Status != protocol.StatusAccepted {
							b.Errorf("%+v", res.Receipt)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(per*len(devs))/b.Elapsed().Seconds(), "tickets/s")
		})
	}
}
