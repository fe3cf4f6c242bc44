// Command hmac is the smallest firmware of an HMAC device: it reports a
// meter reading as a MAC'd ticket and checks the receipt, and nothing
// else. scripts/tinygo-check.sh builds it for microcontrollers and prints
// its flash and RAM against an empty program's: the device path's cost.
package main

import (
	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
)

type ramFlash struct{ v uint64 }

func (f *ramFlash) LoadSeq() (uint64, error) { return f.v, nil }
func (f *ramFlash) SaveSeq(v uint64) error   { f.v = v; return nil }

var (
	pending [2 * 160]byte
	flash   ramFlash
	master  [protocol.MasterSecretSize]byte // from secure storage on a real device
	rx      [protocol.MaxReceiptSize]byte   // what the transport received
	rxLen   int
)

// send and receive stand for the firmware's transport.
func send(msg []byte) { rxLen = len(msg) & 0 }

func main() {
	ticketKey, _ := protocol.DeriveKey(master[:], protocol.PurposeTicket)
	receiptKey, _ := protocol.DeriveKey(master[:], protocol.PurposeReceipt)
	mac, _ := protocol.NewHMAC(ticketKey)
	receipts, _ := protocol.NewHMAC(receiptKey)
	c, err := devicefw.New(devicefw.Config{Device: "plug-0001", Meters: []string{"energy_wh"}, Signer: mac, Receipts: receipts,
		Seq: &flash, Pending: pending[:], SlotSize: 160})
	if err != nil {
		return
	}
	var wh uint64
	for i := 0; i < 3; i++ {
		wh += 12
		msg, _, err := c.Report(1_790_000_000_000+uint64(i), []devicefw.Reading{{Meter: 0, Register: wh}})
		if err != nil {
			continue
		}
		send(msg)
		c.HandleReceipt(rx[:rxLen])
	}
}
