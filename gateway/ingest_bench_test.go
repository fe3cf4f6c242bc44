package gateway_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/protocol"
)

// BenchmarkSubmitHMAC runs pre-signed HMAC tickets of 64 devices through
// the pipeline in process, 64 at a time: decode, verify, price, commit.
func BenchmarkSubmitHMAC(b *testing.B) {
	var specs []devSpec
	for i := 0; i < 64; i++ {
		specs = append(specs, devSpec{fmt.Sprintf("d%d", i), "hmac", "fleet"})
	}
	tg := startGateway(b, specs, func(c *gateway.Config) { c.DTLS.Listen = "off" })
	per := b.N/64 + 1
	tickets := make([][][]byte, 64)
	for d := range tickets {
		id := fmt.Sprintf("d%d", d)
		s, _ := tg.secrets[id].Signer()
		var enc protocol.Encoder
		for i := 0; i < per; i++ {
			t, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: id, Seq: uint64(i + 1), Time: uint64(time.Now().UnixMilli()),
				Readings: []protocol.Reading{{Meter: "energy_wh", Register: uint64(10 * i)}}}, s)
			tickets[d] = append(tickets[d], t)
		}
	}
	var n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for d := 0; d < 64; d++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("d%d", d)
			for i := 0; i < per && n.Add(1) <= int64(b.N); i++ {
				r := tg.Ingest().Submit(context.Background(), gateway.Submission{Device: id, Payload: tickets[d][i], Transport: "bench"})
				if r.Receipt.Status != protocol.StatusAccepted {
					b.Errorf("%s/%d: %+v", id, i, r.Receipt)
					return
				}
			}
		}()
	}
	wg.Wait()
}
