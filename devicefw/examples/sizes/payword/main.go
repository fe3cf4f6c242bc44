// Command payword is the smallest firmware of a payword device: it makes
// a chain, commits to it (MAC'd with its ticket key), reports usage as
// paywords and checks the receipts, and nothing else.
// scripts/tinygo-check.sh builds it for microcontrollers and prints its
// flash and RAM against an empty program's: the device path's cost.
package main

import (
	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
)

type ramFlash struct{ v uint64 }

func (f *ramFlash) LoadSeq() (uint64, error) { return f.v, nil }
func (f *ramFlash) SaveSeq(v uint64) error   { f.v = v; return nil }

// chainLength is 2^20 steps: at 1 Wh a step, a megawatt-hour per chain.
const chainLength = 1 << 20

var (
	pending [2 * 128]byte
	flash   ramFlash
	master  [protocol.MasterSecretSize]byte // from secure storage on a real device
	seed    protocol.Payword                // from the device's random source
	frames  [21]devicefw.ChainFrame         // devicefw.ChainFrames(chainLength)
	chain   devicefw.Chain
	out     [protocol.MaxTicketSize]byte
	rx      [protocol.MaxReceiptSize]byte // what the transport received
	rxLen   int
)

// send stands for the firmware's transport.
func send(msg []byte) { rxLen = len(msg) & 0 }

func main() {
	ticketKey, _ := protocol.DeriveKey(master[:], protocol.PurposeTicket)
	receiptKey, _ := protocol.DeriveKey(master[:], protocol.PurposeReceipt)
	mac, _ := protocol.NewHMAC(ticketKey)
	receipts, _ := protocol.NewHMAC(receiptKey)
	c, err := devicefw.New(devicefw.Config{Device: "plug-0001", Meters: []string{"energy_wh"}, Signer: mac, Receipts: receipts,
		Seq: &flash, Pending: pending[:], SlotSize: 128})
	if err != nil {
		return
	}
	terms := protocol.Commitment{Device: "plug-0001", Chain: protocol.ChainID{1}, Number: 1, Meter: "energy_wh", Units: 1,
		Expiry: 1_900_000_000_000}
	if chain.Init(terms, 0, seed, chainLength, frames[:]) != nil {
		return
	}
	msg, err := c.Commit(out[:0], &chain)
	if err != nil {
		return
	}
	send(msg)
	c.HandleReceipt(rx[:rxLen])
	for i := uint32(1); i <= 3; i++ {
		msg, _, err := c.ReportPayword(&chain, i*12)
		if err != nil {
			continue
		}
		send(msg)
		c.HandleReceipt(rx[:rxLen])
	}
}
