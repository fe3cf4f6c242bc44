// Command smartplug is firmware for a metered smart plug, reduced to what
// Farthing asks of it: keep an energy register and an on-time register,
// report them as signed tickets, and handle the receipts. It builds for a
// microcontroller with TinyGo:
//
//	tinygo build -o smartplug.o -target=cortex-m-qemu ./devicefw/examples/smartplug
//
// and runs on a workstation with go run, printing its tickets in hex. The
// keys are fixed demo keys; real firmware loads them from secure storage.
package main

import (
	"crypto/ed25519"
	"encoding/hex"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
)

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
	})
	if err != nil {
		panic(err)
	}

	// The gateway's side of the conversation, so the example is complete
	// on a board with no network: it MACs receipts with the same key.
	var gw protocol.Encoder
	var rbuf [protocol.MaxReceiptSize]byte

	var energyWh, onMs uint64
	now := uint64(1_790_000_000_000)
	for i := 0; i < 5; i++ {
		energyWh += 12
		onMs += 60_000
		now += 60_000
		msg, seq, err := c.Report(now, []devicefw.Reading{{Meter: meterEnergy, Register: energyWh}, {Meter: meterOnTime, Register: onMs}})
		if err != nil {
			println("report failed:", err.Error())
			continue
		}
		println("ticket", seq, hex.EncodeToString(msg))

		r := protocol.Receipt{Device: "plug-0001", Seq: seq, Status: protocol.StatusAccepted, Charged: 3_600_000, Balance: int64(1_000_000_000 - 3_600_000*uint64(i+1)), HasBalance: true, Currency: "EUR"}
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
	println("pending", c.Pending(), "flash writes reserve up to", flash.v)

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
}
