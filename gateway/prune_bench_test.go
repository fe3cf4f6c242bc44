package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
)

// BenchmarkPrunePerTicket is what pruning and folding cost per ticket:
// 20,000 tickets of 20 devices in 100 ms windows, confirmed upstream, then
// pruned (leaves, receipts, sealed records, entries folded) as housekeeping
// does, a commit of at most 256 aggregates at a time. The metric is the
// time of those commits divided by the tickets.
func BenchmarkPrunePerTicket(b *testing.B) {
	const devices, perDevice = 20, 1000
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer up.Close()
	var specs []devSpec
	for i := range devices {
		specs = append(specs, devSpec{fmt.Sprintf("plug-%02d", i), "hmac", "fleet"})
	}
	for b.Loop() {
		tg := startGateway(b, specs, func(c *gateway.Config) {
			c.DTLS.Listen = "off"
			c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: 100 * time.Millisecond}}
			c.Upstreams = []gateway.UpstreamConfig{{Name: "h", Type: "http", URL: up.URL}}
			c.Audit.Sink = "off"
		})
		submitMany(b, tg, devices, 1, perDevice)
		tg.CloseWindows(context.Background(), time.Now().Add(time.Second))
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if rep, _ := tg.Books().Inspect(nil); rep.Outbox == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the outbox did not drain")
			}
		}
		start := time.Now()
		opts := ledger.PruneOptions{Upstreams: []string{"h"}, Retention: time.Hour, Now: time.Now().Add(48 * time.Hour)}
		for {
			n, err := tg.Ingest().Books().Prune(context.Background(), opts)
			if err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				break
			}
		}
		took := time.Since(start)
		b.ReportMetric(float64(took.Nanoseconds())/float64(devices*perDevice), "ns/ticket")
		if _, _, ok := tg.Books().StoredTicket("plug-03", 500); ok {
			b.Fatal("nothing was pruned")
		}
		tg.stop()
	}
}
