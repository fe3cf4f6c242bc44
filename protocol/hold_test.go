package protocol_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// A hold record survives the strict decoder, and the largest one the
// rules allow fits MaxHoldSize.
func TestHoldRoundTripAndLargest(t *testing.T) {
	s, _ := testEd25519(t)
	h := protocol.Hold{Gateway: "gw-1", Seq: 7, Device: "plug-1", Ticket: 12, Account: "acme", Provider: "grid",
		Action: protocol.HoldReleased, Rule: protocol.ReasonRegisterJump,
		Usage: []protocol.HoldReading{{Meter: "energy", Quantity: 4294967295}}, Amount: 1_000_000_000,
		Currency: "EUR", Time: 1_700_000_000_000, Note: "meter replaced on site", Epoch: 3}
	var enc protocol.Encoder
	b, err := enc.AppendHold(nil, &h, s)
	if err != nil {
		t.Fatal(err)
	}
	m, err := strict.Decode(b)
	if err != nil || m.Kind != protocol.KindHold || m.Hold == nil {
		t.Fatalf("decode: %+v, %v", m, err)
	}
	if fmt.Sprint(*m.Hold) != fmt.Sprint(h) {
		t.Errorf("decoded %+v\nwant    %+v", *m.Hold, h)
	}

	long := func(n int) string { return strings.Repeat("x", n) }
	big := protocol.Hold{Gateway: long(protocol.MaxDeviceIDLen), Seq: protocol.MaxSeq, Device: long(protocol.MaxDeviceIDLen),
		Ticket: protocol.MaxSeq, Account: long(protocol.MaxAccountLen), Provider: long(protocol.MaxDeviceIDLen),
		Action: protocol.HoldReleased, Rule: protocol.ReasonRegisterFault, Amount: 1<<63 - 1,
		Currency: long(protocol.MaxCurrencyLen), Time: math.MaxUint64, Note: long(protocol.MaxHoldNoteLen), Epoch: math.MaxUint64}
	for i := range protocol.MaxReadings {
		big.Usage = append(big.Usage, protocol.HoldReading{Meter: long(protocol.MaxMeterNameLen-2) + fmt.Sprintf("%02d", i), Quantity: math.MaxUint64})
	}
	b, err = enc.AppendHold(nil, &big, s)
	if err != nil {
		t.Fatalf("the largest hold record: %v", err)
	}
	if _, _, err := strict.DecodeHold(b); err != nil {
		t.Fatalf("the largest hold record (%d bytes) does not decode: %v", len(b), err)
	}
	t.Logf("the largest hold record is %d bytes of %d", len(b), protocol.MaxHoldSize)
}

// Records the rules forbid are refused when made.
func TestHoldRules(t *testing.T) {
	s, _ := testEd25519(t)
	for name, change := range map[string]func(h *protocol.Hold){
		"held with amount": func(h *protocol.Hold) { h.Action = protocol.HoldHeld; h.Amount = 1 },
		"unknown action":   func(h *protocol.Hold) { h.Action = "paid" },
		"not a hold rule":  func(h *protocol.Hold) { h.Rule = protocol.ReasonBadSignature },
		"no usage":         func(h *protocol.Hold) { h.Usage = nil },
		"meter twice":      func(h *protocol.Hold) { h.Usage = append(h.Usage, h.Usage[0]) },
		"note control":     func(h *protocol.Hold) { h.Note = "a\nb" },
		"note long":        func(h *protocol.Hold) { h.Note = strings.Repeat("n", 65) },
		"no ticket seq":    func(h *protocol.Hold) { h.Ticket = 0 },
	} {
		h := protocol.Hold{Gateway: "gw-1", Seq: 7, Device: "plug-1", Ticket: 12, Account: "acme", Provider: "grid",
			Action: protocol.HoldVoided, Rule: protocol.ReasonRateTooHigh,
			Usage: []protocol.HoldReading{{Meter: "energy", Quantity: 5}}, Currency: "EUR", Time: 1}
		change(&h)
		var enc protocol.Encoder
		_, err := enc.AppendHold(nil, &h, s)
		var pe *protocol.Error
		if !errors.As(err, &pe) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
}
