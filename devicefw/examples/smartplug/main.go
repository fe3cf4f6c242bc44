// Command smartplug is firmware for a metered smart plug, reduced to what
// Farthing asks of it: keep an energy register and an on-time register,
// report them as signed tickets, and handle the receipts. It builds for a
// microcontroller with TinyGo:
//
//	tinygo build -o smartplug.o -target=cortex-m-qemu -tags farthing_ed25519 ./devicefw/examples/smartplug
//
// and runs on a workstation with go run, printing its tickets in hex. The
// keys are fixed demo keys; real firmware loads them from secure storage.
// It also runs in payword mode: it commits to a hash chain of 1 Wh steps
// and reports its energy as paywords, each checked by the gateway with
// one SHA-256 per step instead of a MAC or a signature. And it serves a
// load under a grant: it asks before it switches on, serves while the
// grant allows, asks again at the threshold, stops at the final unit by
// itself, and releases the grant when the load is done.
package main

import (
	"crypto/ed25519"
	"encoding/hex"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
)

// uptimeMs is the plug's only clock: milliseconds since it booted (a
// timer interrupt would count it). It has no real-time clock: it learns
// the time from its receipts (Config.Uptime, Client.Now).
var uptimeMs uint64

func uptime() uint64 { return uptimeMs }

// ramFlash stands in for the flash page that keeps the seq reservation.
type ramFlash struct{ v uint64 }

func (f *ramFlash) LoadSeq() (uint64, error) { return f.v, nil }
func (f *ramFlash) SaveSeq(v uint64) error   { f.v = v; return nil }

// Meter indexes into the meter list of the config.
const (
	meterEnergy = 0
	meterOnTime = 1
)

// Static buffers: nothing is allocated per ticket.
var (
	pending [4 * 192]byte
	flash   ramFlash
	master  = [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
)

func main() {
	ticketKey, _ := protocol.DeriveKey(master[:], protocol.PurposeTicket)
	receiptKey, _ := protocol.DeriveKey(master[:], protocol.PurposeReceipt)
	mac, err := protocol.NewHMAC(ticketKey)
	if err != nil {
		panic(err)
	}
	receipts, err := protocol.NewHMAC(receiptKey)
	if err != nil {
		panic(err)
	}
	c, err := devicefw.New(devicefw.Config{
		Device:   "plug-0001",
		Meters:   []string{"energy_wh", "on_ms"},
		Signer:   mac,
		Receipts: receipts,
		Seq:      &flash,
		Pending:  pending[:],
		SlotSize: 192,
		Uptime:   uptime,
	})
	if err != nil {
		panic(err)
	}

	now, energyWh := report(c, receipts)
	println("pending", c.Pending(), "flash writes reserve up to", flash.v)
	energyWh = serveUnderGrant(c, receipts, energyWh)

	// Ed25519 tickets: the same client API with a signing key.
	priv := ed25519.NewKeyFromSeed(master[:])
	ed, _ := protocol.NewEd25519Signer(priv)
	var buf [protocol.MaxTicketSize]byte
	c2, _ := devicefw.New(devicefw.Config{Device: "plug-0001", Meters: []string{"energy_wh"}, Signer: ed, Receipts: receipts, Seq: &flash})
	msg, seq, err := c2.Build(buf[:0], now, []devicefw.Reading{{Meter: meterEnergy, Register: energyWh}})
	if err != nil {
		panic(err)
	}
	println("ed25519 ticket", seq, hex.EncodeToString(msg))

	paywordMode(now, energyWh, receipts)
}

// report takes five readings and reports each, dated by the time the
// receipts taught (the gateway's side of the conversation is played here,
// so the example is complete on a board with no network). It returns the
// last time and energy register.
func report(c *devicefw.Client, receipts *protocol.HMAC) (now, energyWh uint64) {
	// The gateway's side of the conversation, so the example is complete
	// on a board with no network: it MACs receipts with the same key.
	var gw protocol.Encoder
	var rbuf [protocol.MaxReceiptSize]byte

	var onMs uint64
	gatewayClock := uint64(1_790_000_000_000) // the gateway's, on the other side
	for i := 0; i < 5; i++ {
		energyWh += 12
		onMs += 60_000
		uptimeMs += 60_000
		gatewayClock += 60_000
		// Dated by the time the last receipt taught; the first ticket,
		// before any receipt, only has the uptime (the gateway refuses it
		// clock_skew, and the next ticket's registers carry its usage).
		var synced bool
		now, synced = c.Now()
		println("time", now, "synced", synced)
		msg, seq, err := c.Report(now, []devicefw.Reading{{Meter: meterEnergy, Register: energyWh}, {Meter: meterOnTime, Register: onMs}})
		if err != nil {
			println("report failed:", err.Error())
			continue
		}
		println("ticket", seq, hex.EncodeToString(msg))

		r := protocol.Receipt{Device: "plug-0001", Seq: seq, Status: protocol.StatusAccepted, Charged: 3_600_000, Balance: int64(1_000_000_000 - 3_600_000*uint64(i+1)), HasBalance: true, Currency: "EUR",
			Time: gatewayClock}
		if !synced {
			r = protocol.Receipt{Device: "plug-0001", Seq: seq, Status: protocol.StatusRejected, Reason: protocol.ReasonClockSkew, Time: gatewayClock}
		}
		rb, err := gw.AppendReceipt(rbuf[:0], &r, receipts)
		if err != nil {
			panic(err)
		}
		got, err := c.HandleReceipt(rb)
		if err != nil {
			println("receipt refused:", err.Error())
			continue
		}
		println("receipt", got.Seq, got.Status.String(), "charged", got.Charged, "balance", got.Balance, got.Currency)
	}
	return now, energyWh
}

// Payword mode: the chain's frames, the pending tickets' arena and the
// client, all static.
var (
	chainFrames [devicefwChainFrames]devicefw.ChainFrame
	chain       devicefw.Chain
	pwPending   [4 * 128]byte
	pwFlash     ramFlash
)

// chainLength is the payword chain's length: 2^20 steps of 1 Wh, a
// megawatt-hour, in 21 frames (840 bytes of RAM).
const (
	chainLength         = 1 << 20
	devicefwChainFrames = 21
)

func paywordMode(now, energyWh uint64, receipts *protocol.HMAC) {
	ticketKey, _ := protocol.DeriveKey(master[:], protocol.PurposeTicket)
	mac, _ := protocol.NewHMAC(ticketKey)
	c, err := devicefw.New(devicefw.Config{Device: "plug-0001", Meters: []string{"energy_wh"}, Signer: mac, Receipts: receipts,
		Seq: &pwFlash, Pending: pwPending[:], SlotSize: 128})
	if err != nil {
		panic(err)
	}
	// The seed is the device's secret: from its random source in real
	// firmware. The chain starts at the register the meter stands at.
	seed := protocol.Payword{0x5e, 0xed}
	terms := protocol.Commitment{Device: "plug-0001", Chain: protocol.ChainID{0xc4, 0xa1, 0x01}, Number: 1, Meter: "energy_wh",
		Units: 1, Start: energyWh, Expiry: now + 365*24*3600*1000}
	if err := chain.Init(terms, 0, seed, chainLength, chainFrames[:]); err != nil {
		panic(err)
	}
	var out [protocol.MaxTicketSize]byte
	cm, err := c.Commit(out[:0], &chain)
	if err != nil {
		panic(err)
	}
	println("commitment", hex.EncodeToString(cm), "hashes", chain.Hashes())
	for i := uint32(12); i <= 60; i += 12 { // 12 Wh a minute
		msg, seq, err := c.ReportPayword(&chain, i)
		if err != nil {
			println("payword failed:", err.Error())
			continue
		}
		println("payword ticket", seq, hex.EncodeToString(msg))
	}
	println("payword mode: hashes spent after the commitment", chain.Hashes()-chainLength)
}

// serveUnderGrant switches a 2 kW load on under a grant of 50 Wh at a
// time, for 3 minutes of load, reporting every 30 s; the gateway's side
// (grants of 50 Wh, 80 % threshold) is played here. It returns the
// energy register.
func serveUnderGrant(c *devicefw.Client, receipts *protocol.HMAC, energyWh uint64) uint64 {
	var gw protocol.Encoder
	var rbuf [protocol.MaxReceiptSize]byte
	var out [protocol.MaxTicketSize]byte
	answer := func(r *protocol.Receipt) {
		r.Device, r.Time = "plug-0001", uint64(1_790_000_000_000)+uptimeMs
		rb, err := gw.AppendReceipt(rbuf[:0], r, receipts)
		if err != nil {
			panic(err)
		}
		if _, err := c.HandleReceipt(rb); err != nil {
			println("answer refused:", err.Error())
		}
	}
	limit := energyWh
	ask := func() {
		msg, id, err := c.RequestGrant(out[:0], meterEnergy, energyWh, 50, 0)
		if err != nil {
			panic(err)
		}
		println("grant request", id, len(msg), "bytes")
		limit = max(limit, energyWh) + 50
		answer(&protocol.Receipt{Seq: id, Status: protocol.StatusAccepted, Grant: protocol.Grant{ID: 1, Meter: "energy_wh",
			Limit: limit, Threshold: limit - 10, Reserved: 15_000_000, Expiry: 1_790_000_000_000 + uptimeMs + 600_000,
			Validity: 600_000, Idle: 120_000}})
		println("grant: serve to", limit, "Wh")
	}
	ask()
	for load := 0; load < 6; load++ {
		now, _ := c.Now()
		d := c.May(now, energyWh)
		if d == devicefw.Stop {
			println("grant used up: load off at", energyWh, "Wh")
			break
		}
		if d == devicefw.AskAgain {
			ask()
		}
		uptimeMs += 30_000
		energyWh += 16 // 2 kW for 30 s
		msg, seq, err := c.Report(now, []devicefw.Reading{{Meter: meterEnergy, Register: energyWh}})
		if err != nil {
			println("report failed:", err.Error())
			continue
		}
		println("ticket under the grant", seq, len(msg), "bytes")
		answer(&protocol.Receipt{Seq: seq, Status: protocol.StatusAccepted, Charged: 4_800_000})
	}
	msg, id, err := c.Release(out[:0], energyWh)
	if err != nil {
		panic(err)
	}
	println("release", id, len(msg), "bytes")
	answer(&protocol.Receipt{Seq: id, Status: protocol.StatusAccepted, Grant: protocol.Grant{ID: 1, Meter: "energy_wh",
		Limit: limit, Threshold: limit - 10, Expiry: 1_790_000_000_000 + uptimeMs, Idle: 120_000, Closed: protocol.GrantReleased}})
	g, _ := c.Grant()
	println("released; grant held:", g.ID != 0)
	return energyWh
}
