package protocol

// Hold is a gateway's record of a quarantined ticket: a ticket that broke
// a plausibility rule of its meter and was held (committed, charged
// nothing), and later the operator's release (the usage was charged) or
// void (it was discarded). It goes upstream through the same outbox as the
// aggregates, numbered in the same gapless stream, so a provider sees
// usage the gateway did not charge and what became of it. A COSE_Sign1 by
// the gateway key.
//
//	hold-payload = {
//	  0: 6,                 ; kind: hold
//	  1: id,                ; gateway id
//	  2: seq,               ; the stream's seq (shared with the aggregates)
//	  3: id,                ; device
//	  4: seq,               ; the held ticket's seq
//	  5: id,                ; account
//	  6: id,                ; provider
//	  7: "held" / "released" / "voided",
//	  8: uint,              ; the rule broken: a receipt reason (65, 67, 70, 73, 74)
//	  9: [1*16 [meter, uint]], ; the usage held, per meter (units)
//	  ? 10: uint .gt 0,     ; released: the amount charged, nanos
//	  11: currency,
//	  12: ms,               ; when (gateway clock): held, released or voided
//	  ? 13: tstr,           ; the operator's note: 1..64 bytes of printable ASCII
//	  ? 14: uint .gt 0,     ; stream epoch, as in an aggregate
//	}
type Hold struct {
	Gateway  string        `json:"gateway"`
	Seq      uint64        `json:"seq"`
	Device   string        `json:"device"`
	Ticket   uint64        `json:"ticket_seq"`
	Account  string        `json:"account"`
	Provider string        `json:"provider"`
	Action   string        `json:"action"` // HoldHeld, HoldReleased or HoldVoided
	Rule     Reason        `json:"rule"`
	Usage    []HoldReading `json:"usage"`
	Amount   uint64        `json:"amount_nanos,omitempty"`
	Currency string        `json:"currency"`
	Time     uint64        `json:"time_ms"`
	Note     string        `json:"note,omitempty"`
	Epoch    uint64        `json:"stream_epoch,omitempty"`
}

// HoldReading is one meter's usage in a held ticket.
type HoldReading struct {
	Meter    string `json:"meter"`
	Quantity uint64 `json:"quantity"`
}

// Hold actions.
const (
	HoldHeld     = "held"
	HoldReleased = "released"
	HoldVoided   = "voided"
)

// MaxHoldNoteLen bounds a hold record's note.
const MaxHoldNoteLen = 64

// Hold payload keys.
const (
	holdGateway  = 1
	holdSeq      = 2
	holdDevice   = 3
	holdTicket   = 4
	holdAccount  = 5
	holdProvider = 6
	holdAction   = 7
	holdRule     = 8
	holdUsage    = 9
	holdAmount   = 10
	holdCurrency = 11
	holdTime     = 12
	holdNote     = 13
	holdEpoch    = 14
)

// HoldRules are the reasons a ticket is held for.
var HoldRules = [...]Reason{ReasonRegisterBackwards, ReasonClockSkew, ReasonRegisterJump, ReasonRateTooHigh, ReasonRegisterFault, ReasonGrantExceeded}

func isHoldRule(r Reason) bool {
	for _, h := range HoldRules {
		if h == r {
			return true
		}
	}
	return false
}

// Validate checks h against the limits and rules of the wire format.
func (h *Hold) Validate() error {
	for _, f := range [...]struct {
		v    string
		max  int
		what string
	}{
		{h.Gateway, MaxDeviceIDLen, "gateway id"},
		{h.Device, MaxDeviceIDLen, "device id"},
		{h.Account, MaxAccountLen, "account"},
		{h.Provider, MaxDeviceIDLen, "provider"},
		{h.Currency, MaxCurrencyLen, "currency"},
	} {
		if err := checkNameString(f.v, f.max, f.what); err != nil {
			return err
		}
	}
	if h.Seq == 0 || h.Seq > MaxSeq || h.Ticket == 0 || h.Ticket > MaxSeq {
		return newError(ReasonFieldRange, "seq and ticket seq must be in 1..2^63-1")
	}
	switch h.Action {
	case HoldHeld, HoldVoided:
		if h.Amount != 0 {
			return newError(ReasonFieldRange, "only a release charges an amount")
		}
	case HoldReleased:
		if h.Amount > 1<<63-1 {
			return newError(ReasonFieldRange, "amount must be in 0..2^63-1")
		}
	default:
		return newError(ReasonFieldRange, "hold action must be held, released or voided")
	}
	if !isHoldRule(h.Rule) {
		return newError(ReasonFieldRange, "the rule is not a reason a ticket is held for")
	}
	if len(h.Usage) == 0 || len(h.Usage) > MaxReadings {
		return newError(ReasonTooManyReadings, "a hold lists 1..16 meters")
	}
	for i, u := range h.Usage {
		if err := checkNameString(u.Meter, MaxMeterNameLen, "meter"); err != nil {
			return err
		}
		for _, v := range h.Usage[:i] {
			if v.Meter == u.Meter {
				return newError(ReasonDuplicateMeter, "meter "+u.Meter+" twice")
			}
		}
	}
	if h.Time == 0 {
		return newError(ReasonFieldRange, "a hold has a time")
	}
	if len(h.Note) > MaxHoldNoteLen {
		return newError(ReasonStringTooLong, "note is longer than 64 bytes")
	}
	for i := 0; i < len(h.Note); i++ {
		if c := h.Note[i]; c < 0x20 || c > 0x7e {
			return newError(ReasonBadName, "note has a character outside printable ASCII")
		}
	}
	return nil
}

// AppendHoldPayload validates h and appends its deterministic payload.
func AppendHoldPayload(dst []byte, h *Hold) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return dst, err
	}
	n := 12
	for _, opt := range [...]bool{h.Amount != 0, h.Note != "", h.Epoch != 0} {
		if opt {
			n++
		}
	}
	dst = appendHead(dst, majorMap, uint64(n))
	dst = append(dst, keyKind, byte(KindHold))
	dst = appendUint(dst, holdGateway)
	dst = appendText(dst, h.Gateway)
	dst = appendUint(dst, holdSeq)
	dst = appendUint(dst, h.Seq)
	dst = appendUint(dst, holdDevice)
	dst = appendText(dst, h.Device)
	dst = appendUint(dst, holdTicket)
	dst = appendUint(dst, h.Ticket)
	dst = appendUint(dst, holdAccount)
	dst = appendText(dst, h.Account)
	dst = appendUint(dst, holdProvider)
	dst = appendText(dst, h.Provider)
	dst = appendUint(dst, holdAction)
	dst = appendText(dst, h.Action)
	dst = appendUint(dst, holdRule)
	dst = appendUint(dst, uint64(h.Rule))
	dst = appendUint(dst, holdUsage)
	dst = appendHead(dst, majorArray, uint64(len(h.Usage)))
	for _, u := range h.Usage {
		dst = appendHead(dst, majorArray, 2)
		dst = appendText(dst, u.Meter)
		dst = appendUint(dst, u.Quantity)
	}
	if h.Amount != 0 {
		dst = appendUint(dst, holdAmount)
		dst = appendUint(dst, h.Amount)
	}
	dst = appendUint(dst, holdCurrency)
	dst = appendText(dst, h.Currency)
	dst = appendUint(dst, holdTime)
	dst = appendUint(dst, h.Time)
	if h.Note != "" {
		dst = appendUint(dst, holdNote)
		dst = appendText(dst, h.Note)
	}
	if h.Epoch != 0 {
		dst = appendUint(dst, holdEpoch)
		dst = appendUint(dst, h.Epoch)
	}
	return dst, nil
}

// AppendHold validates h, signs it with the gateway's signer and appends
// the tagged COSE_Sign1 to dst.
func (e *Encoder) AppendHold(dst []byte, h *Hold, s Signer) ([]byte, error) {
	if s.Algorithm() != AlgEdDSA {
		return dst, newError(ReasonUnsupportedAlg, "hold records are signed with EdDSA")
	}
	p, err := AppendHoldPayload(e.payload(), h)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxHoldSize)
}
