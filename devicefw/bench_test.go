package devicefw_test

import (
	"testing"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
)

// BenchmarkBuild measures encode+sign of one ticket with three readings, the
// firmware's per-ticket work. It must report 0 allocs/op.
func BenchmarkBuild(b *testing.B) {
	k := testKeys(b)
	for _, bc := range []struct {
		name string
		s    protocol.Signer
	}{{"HMAC", k.ticket}, {"Ed25519", k.ed}} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := devicefw.New(devicefw.Config{Device: "plug-1", Meters: []string{"energy_wh", "on_ms", "relay_ops"},
				Signer: bc.s, Receipts: k.receipt, Seq: &flash{}, Reserve: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 0, protocol.MaxTicketSize)
			rs := []devicefw.Reading{{Meter: 0, Register: 123456}, {Meter: 1, Register: 9_000_000}, {Meter: 2, Register: 17}}
			b.ReportAllocs()
			var n int
			for i := 0; b.Loop(); i++ {
				rs[0].Register++
				out, _, err := c.Build(buf, 1_790_000_000_000+uint64(i), rs)
				if err != nil {
					b.Fatal(err)
				}
				n = len(out)
			}
			b.ReportMetric(float64(n), "bytes/ticket")
		})
	}
}

// BenchmarkReport adds keeping the ticket pending and handling its receipt.
func BenchmarkReportAndReceipt(b *testing.B) {
	k := testKeys(b)
	c := newClient(b, k, &flash{}, 8)
	var enc protocol.Encoder
	rc := protocol.Receipt{Device: "plug-1", Status: protocol.StatusAccepted, Charged: 10}
	rbuf := make([]byte, 0, protocol.MaxReceiptSize)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_, seq, err := c.Report(uint64(i+1), []devicefw.Reading{{Meter: 0, Register: uint64(i)}})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rc.Seq = seq
		r, _ := enc.AppendReceipt(rbuf[:0], &rc, k.receipt)
		b.StartTimer()
		if _, err := c.HandleReceipt(r); err != nil {
			b.Fatal(err)
		}
	}
}
