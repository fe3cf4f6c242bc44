package gateway_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/internal/procio"
	"github.com/farthing-iot/farthing/protocol"
)

// BenchmarkStateBytesPerTicket measures what the state file keeps per
// accepted ticket within the horizon (before anything is pruned): 20 HMAC
// devices send 20,000 tickets of 10 Wh each; the metric is the growth of
// the bytes in use (file less free pages) divided by the tickets.
func BenchmarkStateBytesPerTicket(b *testing.B) {
	const devices, perDevice = 20, 1000
	var specs []devSpec
	for i := range devices {
		specs = append(specs, devSpec{fmt.Sprintf("plug-%02d", i), "hmac", "fleet"})
	}
	for b.Loop() {
		tg := startGateway(b, specs, func(c *gateway.Config) { c.DTLS.Listen = "off" })
		submitMany(b, tg, devices, 1, 5) // baselines and warm-up
		checkpoint(b, tg)
		before := tg.Store().Usage()
		submitMany(b, tg, devices, 6, perDevice)
		checkpoint(b, tg) // what waits in the journal is in the file
		after := tg.Store().Usage()
		b.ReportMetric(float64(after.InUse()-before.InUse())/float64(devices*perDevice), "bytes/ticket")
		b.ReportMetric(float64(after.FileBytes-before.FileBytes)/float64(devices*perDevice), "file-bytes/ticket")
		tg.stop()
	}
}

// BenchmarkBytesWrittenPerTicket measures what a ticket costs the
// storage, the wear of an SD card or eMMC: the bytes this process wrote to
// disk (write_bytes of /proc/self/io) and the fsyncs of the state file and
// its journal, per accepted ticket, the checkpoint that writes them into
// the state file included. "alone": one device sends one ticket at a time,
// each committed by itself (a site's low rate); "20-at-once": twenty
// devices at once, whose tickets share commits.
func BenchmarkBytesWrittenPerTicket(b *testing.B) {
	for _, c := range []struct {
		name         string
		devices, per int
	}{{"alone", 1, 500}, {"20-at-once", 20, 250}} {
		b.Run(c.name, func(b *testing.B) {
			var specs []devSpec
			for i := range c.devices {
				specs = append(specs, devSpec{fmt.Sprintf("plug-%02d", i), "hmac", "fleet"})
			}
			for b.Loop() {
				tg := startGateway(b, specs, func(c *gateway.Config) { c.DTLS.Listen = "off" })
				submitMany(b, tg, c.devices, 1, 5)
				checkpoint(b, tg)
				w0, s0 := procio.WriteBytes(), tg.Store().Stats()
				submitMany(b, tg, c.devices, 6, uint64(c.per))
				checkpoint(b, tg)
				w1, s1 := procio.WriteBytes(), tg.Store().Stats()
				n := float64(c.devices * c.per)
				b.ReportMetric(float64(w1-w0)/n, "bytes-written/ticket")
				b.ReportMetric(float64(s1.Syncs-s0.Syncs)/n, "fsyncs/ticket")
				tg.stop()
			}
		})
	}
}

// checkpoint writes what waits in the journal into the state file.
func checkpoint(b testing.TB, tg *testGateway) {
	if err := tg.Store().Checkpoint(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// submitMany sends n tickets per device from seq from on, all devices at
// once, each ticket 10 Wh more.
func submitMany(b testing.TB, tg *testGateway, devices int, from, n uint64) {
	var wg sync.WaitGroup
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("plug-%02d", d)
			s, _ := tg.secrets[id].Signer()
			var enc protocol.Encoder
			for seq := from; seq < from+n; seq++ {
				t, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: id, Seq: seq, Time: uint64(time.Now().UnixMilli()),
					Readings: []protocol.Reading{{Meter: "energy_wh", Register: seq * 10}}}, s)
				r := tg.Ingest().Submit(context.Background(), entrance.Message{Device: id, Payload: t, Transport: "bench"})
				if r.Receipt.Status != protocol.StatusAccepted {
					b.Errorf("%s/%d: %+v", id, seq, r.Receipt)
					return
				}
			}
		}()
	}
	wg.Wait()
}
