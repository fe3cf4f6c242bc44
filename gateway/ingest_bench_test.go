package gateway_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/protocol"
)

// startBenchGateway starts a gateway of 64 HMAC devices d0..d63 and says
// how many tickets each sends for b.N in all.
func startBenchGateway(b *testing.B) (*testGateway, int) {
	var specs []devSpec
	for i := 0; i < 64; i++ {
		specs = append(specs, devSpec{fmt.Sprintf("d%d", i), "hmac", "fleet"})
	}
	return startGateway(b, specs, func(c *gateway.Config) { c.DTLS.Listen = "off" }), b.N/64 + 1
}

// submitAll submits tickets[d][i] for every device d, b.N in all, 64
// devices at a time, each ticket accepted.
func submitAll(b *testing.B, tg *testGateway, tickets [][][]byte, per int) {
	var n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for d := range tickets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("d%d", d)
			for i := 0; i < per && n.Add(1) <= int64(b.N); i++ {
				r := tg.Ingest().Submit(context.Background(), entrance.Message{Device: id, Payload: tickets[d][i], Transport: "bench"})
				if r.Receipt.Status != protocol.StatusAccepted {
					b.Errorf("%s/%d: %+v", id, i, r.Receipt)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// presign makes per messages of each of the 64 devices, signed with its
// key: msg(enc, id, i, s) is device id's i-th (from 0).
func presign(tg *testGateway, per int, msg func(enc *protocol.Encoder, id string, i int, s protocol.Signer) []byte) [][][]byte {
	out := make([][][]byte, 64)
	for d := range out {
		id := fmt.Sprintf("d%d", d)
		s, _ := tg.secrets[id].Signer()
		var enc protocol.Encoder
		for i := 0; i < per; i++ {
			out[d] = append(out[d], msg(&enc, id, i, s))
		}
	}
	return out
}

// BenchmarkSubmitPayword is BenchmarkSubmitHMAC with payword tickets of
// one step each, after each device committed to its chain: the payword
// check and the chain's progress instead of an HMAC.
func BenchmarkSubmitPayword(b *testing.B) {
	tg, per := startBenchGateway(b)
	tickets := make([][][]byte, 64)
	for d := range tickets {
		id := fmt.Sprintf("d%d", d)
		s, _ := tg.secrets[id].Signer()
		chain := protocol.ChainID{byte(d), 0xbe}
		words := make([]protocol.Payword, per+1) // words[i] = w_i; w_per is the seed
		words[per] = protocol.Payword{byte(d), 1}
		for i := per - 1; i >= 0; i-- {
			words[i] = protocol.PaywordStep(&chain, &words[i+1])
		}
		c := protocol.Commitment{Device: id, Chain: chain, Number: 1, Meter: "energy_wh", Units: 10, Length: uint32(per), Anchor: words[0],
			Expiry: uint64(time.Now().Add(time.Hour).UnixMilli())}
		var enc protocol.Encoder
		cb, err := enc.AppendCommitment(nil, &c, s)
		if err != nil {
			b.Fatal(err)
		}
		if r := tg.Ingest().Submit(context.Background(), entrance.Message{Device: id, Payload: cb, Transport: "bench"}); r.Receipt.Status != protocol.StatusAccepted {
			b.Fatalf("%s's commitment: %+v", id, r.Receipt)
		}
		for i := 1; i <= per; i++ {
			pw, err := protocol.AppendPaywordTicket(nil, &protocol.PaywordTicket{Device: id, Chain: chain, Index: uint32(i), Word: words[i]})
			if err != nil {
				b.Fatal(err)
			}
			tickets[d] = append(tickets[d], pw)
		}
	}
	submitAll(b, tg, tickets, per)
}

// BenchmarkSubmitHMAC runs pre-signed HMAC tickets of 64 devices through
// the pipeline in process, 64 at a time: decode, verify, price, commit.
func BenchmarkSubmitHMAC(b *testing.B) {
	tg, per := startBenchGateway(b)
	submitAll(b, tg, presign(tg, per, func(enc *protocol.Encoder, id string, i int, s protocol.Signer) []byte {
		t, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: id, Seq: uint64(i + 1), Time: uint64(time.Now().UnixMilli()),
			Readings: []protocol.Reading{{Meter: "energy_wh", Register: uint64(10 * i)}}}, s)
		return t
	}), per)
}

// BenchmarkSubmitGrantRequest runs pre-signed grant requests of 64
// devices through the pipeline, 64 at a time: each opens or extends its
// device's grant by 10 Wh, reserving its price on the account.
func BenchmarkSubmitGrantRequest(b *testing.B) {
	tg, per := startBenchGateway(b)
	submitAll(b, tg, presign(tg, per, func(enc *protocol.Encoder, id string, i int, s protocol.Signer) []byte {
		m, _ := enc.AppendGrantRequest(nil, &protocol.GrantRequest{Device: id, Request: uint64(i + 1), Meter: "energy_wh", Units: 10}, s)
		return m
	}), per)
}

// BenchmarkSubmitUnderGrant is BenchmarkSubmitHMAC with every device's
// tickets under a grant that covers them: charged from the reservation,
// the grant written with each.
func BenchmarkSubmitUnderGrant(b *testing.B) {
	tg, per := startBenchGateway(b)
	tickets := presign(tg, per, func(enc *protocol.Encoder, id string, i int, s protocol.Signer) []byte {
		if i == 0 {
			g, _ := enc.AppendGrantRequest(nil, &protocol.GrantRequest{Device: id, Request: 1, Meter: "energy_wh", Units: uint64(10 * per)}, s)
			if r := tg.Ingest().Submit(context.Background(), entrance.Message{Device: id, Payload: g, Transport: "bench"}); !r.Receipt.IsGrant() {
				b.Fatalf("%s's grant: %+v", id, r.Receipt)
			}
		}
		t, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: id, Seq: uint64(i + 2), Time: uint64(time.Now().UnixMilli()),
			Readings: []protocol.Reading{{Meter: "energy_wh", Register: uint64(10 * i)}}, Grant: 1}, s)
		return t
	})
	submitAll(b, tg, tickets, per)
}
