// Command grant is the smallest firmware of an HMAC device that serves
// under grants: it asks for a grant, serves while May allows, reports
// MAC'd tickets naming the grant, checks the receipts and releases the
// grant. scripts/tinygo-check.sh builds it for microcontrollers and
// prints its flash and RAM against an empty program's.
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
	tx      [160]byte                       // what the transport sends
	rx      [protocol.MaxReceiptSize]byte   // what the transport received
	rxLen   int
)

// send stands for the firmware's transport; rx holds the answer.
func send(msg []byte) { rxLen = len(msg) & 0 }

func main() {
	ticketKey, _ := protocol.DeriveKey(master[:], protocol.PurposeTicket)
	receiptKey, _ := protocol.DeriveKey(master[:], protocol.PurposeReceipt)
	mac, _ := protocol.NewHMAC(ticketKey)
	receipts, _ := protocol.NewHMAC(receiptKey)
	c, err := devicefw.New(devicefw.Config{Device: "evse-0001", Meters: []string{"energy_wh"}, Signer: mac, Receipts: receipts,
		Seq: &flash, Pending: pending[:], SlotSize: 160})
	if err != nil {
		return
	}
	var wh uint64
	now := uint64(1_790_000_000_000)
	for d := devicefw.AskAgain; d != devicefw.Stop; d = c.May(now, wh) {
		if d == devicefw.AskAgain { // the first grant, or more at the threshold
			if msg, _, err := c.RequestGrant(tx[:0], 0, wh, 5000, 0); err == nil {
				send(msg)
				c.HandleReceipt(rx[:rxLen])
			}
		}
		wh += 100
		now += 60_000
		if msg, _, err := c.Report(now, []devicefw.Reading{{Meter: 0, Register: wh}}); err == nil {
			send(msg)
			c.HandleReceipt(rx[:rxLen])
		}
	}
	if msg, _, err := c.Release(tx[:0], wh); err == nil {
		send(msg)
		c.HandleReceipt(rx[:rxLen])
	}
}
