//go:build tinygo && cortexm && qemu

// Command emulated is firmware for an emulated Cortex-M3 (QEMU's
// lm3s6965evb, TinyGo's cortex-m-qemu target, linked against Debian's
// picolibc and libgcc: scripts/firmware-emulated.sh). It talks to its test
// over the emulator: it reads its arguments through semihosting
// (SYS_GET_CMDLINE), writes its messages in hex over the UART, and exits
// with a status through semihosting.
//
//	emulated tickets NOW_MS      HMAC tickets, a payword chain's commitment and paywords
//	emulated receipt NOW_MS HEX  the first ticket again, then checks the gateway's receipt
//
// The device is mcu-1 with a fixed master secret (bytes 1..32) and one
// meter, energy_wh; its registers and its chain's seed are fixed, so the
// test knows what each ticket must be charged. For each operation it
// prints the stack it took: the most below the stack pointer that changed
// from a painted pattern.
package main

import (
	"device/arm"
	"encoding/hex"
	"runtime"
	"unsafe"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
)

type ramFlash struct{ v uint64 }

func (f *ramFlash) LoadSeq() (uint64, error) { return f.v, nil }
func (f *ramFlash) SaveSeq(v uint64) error   { f.v = v; return nil }

var (
	pending [4 * 192]byte
	flash   ramFlash
	frames  [12]devicefw.ChainFrame
	chain   devicefw.Chain
	out     [protocol.MaxTicketSize]byte
	cmdline [1024]byte
)

// Registers the test charges: three HMAC tickets, then paywords of 1 Wh
// steps from the last register.
var registers = [...]uint64{1_000, 1_500, 2_100}

func main() {
	args := commandLine()
	if len(args) < 3 {
		fail("usage: emulated tickets|receipt NOW_MS [RECEIPT_HEX]")
	}
	now := parseUint(args[2])
	c := newClient()
	switch args[1] {
	case "tickets":
		tickets(c, now)
		paywords(now)
	case "receipt":
		if len(args) != 4 {
			fail("receipt needs its hex")
		}
		checkReceipt(c, now, args[3])
	default:
		fail("unknown mode")
	}
}

func newClient() *devicefw.Client {
	var master [32]byte
	for i := range master {
		master[i] = byte(i + 1)
	}
	tk, _ := protocol.DeriveKey(master[:], protocol.PurposeTicket)
	rk, _ := protocol.DeriveKey(master[:], protocol.PurposeReceipt)
	mac, _ := protocol.NewHMAC(tk)
	receipts, _ := protocol.NewHMAC(rk)
	c, err := devicefw.New(devicefw.Config{Device: "mcu-1", Meters: []string{"energy_wh"}, Signer: mac, Receipts: receipts,
		Seq: &flash, Pending: pending[:], SlotSize: 192})
	if err != nil {
		fail("client: " + err.Error())
	}
	return c
}

// tickets reports the registers as MAC'd tickets, one a minute before now.
func tickets(c *devicefw.Client, now uint64) {
	for i, reg := range registers {
		var msg []byte
		var err error
		t := uint64(len(registers)-i) * 60_000
		stack := measure(func() {
			msg, _, err = c.Report(now-t, []devicefw.Reading{{Meter: 0, Register: reg}})
		})
		if err != nil {
			fail("report: " + err.Error())
		}
		emit("ticket", msg, stack)
	}
}

// paywords commits to a chain of 1 Wh steps from the last register and
// reports three paywords of it.
func paywords(now uint64) {
	c := newClient()
	seed := protocol.Payword{0x5e, 0xed}
	terms := protocol.Commitment{Device: "mcu-1", Chain: protocol.ChainID{0xc4, 0xa1}, Number: 1, Meter: "energy_wh",
		Units: 1, Start: registers[len(registers)-1], Expiry: now + 24*3600*1000}
	if err := chain.Init(terms, 0, seed, 1024, frames[:]); err != nil {
		fail("chain: " + err.Error())
	}
	var msg []byte
	var err error
	stack := measure(func() { msg, err = c.Commit(out[:0], &chain) })
	if err != nil {
		fail("commit: " + err.Error())
	}
	emit("commitment", msg, stack)
	for _, i := range [...]uint32{10, 25, 60} {
		stack := measure(func() { msg, _, err = c.ReportPayword(&chain, i) })
		if err != nil {
			fail("payword: " + err.Error())
		}
		emit("payword", msg, stack)
	}
}

// checkReceipt makes the first ticket again (the same client from the
// same flash: the same seq and bytes), then checks the gateway's receipt
// for it, and that the receipt with one bit changed is refused.
func checkReceipt(c *devicefw.Client, now uint64, rx string) {
	if _, _, err := c.Report(now-uint64(len(registers))*60_000, []devicefw.Reading{{Meter: 0, Register: registers[0]}}); err != nil {
		fail("report: " + err.Error())
	}
	b, err := hex.DecodeString(rx)
	if err != nil {
		fail("receipt hex")
	}
	bad := append([]byte(nil), b...)
	bad[len(bad)-1] ^= 1
	if _, err := c.HandleReceipt(bad); err == nil {
		fail("a receipt with a bit changed was taken")
	}
	var r protocol.Receipt
	stack := measure(func() { r, err = c.HandleReceipt(b) })
	if err != nil {
		fail("receipt refused: " + err.Error())
	}
	println("receipt", r.Seq, r.Status.String(), r.Charged, "stack", stack, "pending", c.Pending())
	if r.Status != protocol.StatusAccepted || c.Pending() != 0 {
		fail("the receipt does not answer the ticket")
	}
}

// emit prints a message in hex with the stack making it took.
func emit(kind string, msg []byte, stack uint32) {
	println(kind, hex.EncodeToString(msg), "stack", stack)
}

// paint is how far below the stack pointer measure paints: within the
// goroutine's stack (8 KiB with -stack-size=8KB) and above what main has
// used.
const paint = 5 * 1024

const pattern = 0xa5

// measure runs f and returns the stack it took below the caller's frame,
// in bytes.
//
//go:noinline
func measure(f func()) uint32 {
	runtime.GC() // not in the count: a collection due now would be the last message's garbage
	sp := stackPointer()
	base := sp - paint
	for a := base; a < sp-64; a++ {
		*(*byte)(unsafe.Pointer(a)) = pattern
	}
	f()
	for a := base; a < sp-64; a++ {
		if *(*byte)(unsafe.Pointer(a)) != pattern {
			return uint32(sp - a)
		}
	}
	return 0
}

func stackPointer() uintptr { return arm.AsmFull("mov {}, sp", nil) }

// commandLine is SYS_GET_CMDLINE, split at spaces.
func commandLine() []string {
	block := [2]uintptr{uintptr(unsafe.Pointer(&cmdline[0])), uintptr(len(cmdline))}
	if arm.SemihostingCall(arm.SemihostingGetCmdline, uintptr(unsafe.Pointer(&block))) != 0 {
		fail("no command line")
	}
	var args []string
	start := 0
	n := int(block[1])
	for i := 0; i <= n; i++ {
		if i == n || cmdline[i] == ' ' {
			if i > start {
				args = append(args, string(cmdline[start:i]))
			}
			start = i + 1
		}
	}
	return args
}

func parseUint(s string) uint64 {
	var v uint64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			fail("not a number")
		}
		v = v*10 + uint64(s[i]-'0')
	}
	return v
}

func fail(why string) {
	println("FAIL", why)
	panic(why) // exits with a status (SemihostingRunTimeErrorUnknown)
}
