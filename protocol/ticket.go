package protocol

// Ticket is a device's signed report of its cumulative meter registers.
//
//	ticket-payload = {
//	  0: 1,                       ; kind: ticket
//	  1: device-id,               ; tstr, 1..64 of [A-Za-z0-9._-]
//	  2: seq,                     ; uint, 1..2^63-1, strictly increasing per device, gaps allowed
//	  3: time,                    ; uint, device clock, Unix time in milliseconds, > 0
//	  ? 4: epoch,                 ; uint > 0, register epoch; absent means 0
//	  5: [1*16 reading],          ; readings, meter names unique within the ticket
//	  ? 6: account,               ; tstr, 1..64 of [A-Za-z0-9._-]
//	  ? 7: session,               ; tstr, 1..64 of [A-Za-z0-9._-]
//	  ? 8: grant,                 ; uint > 0, the grant the usage is under (grant.go)
//	}
//	reading = [meter: tstr, register: uint]   ; meter 1..32 of [A-Za-z0-9._-]
//
// A register is the meter's cumulative count in its base unit (Wh, bytes,
// ms, ml…), not a delta: the gateway charges the difference to the last
// register it charged for that (device, meter, epoch). The epoch changes
// when the device's registers restart from zero (a device without flash
// after a power loss).
type Ticket struct {
	Device   string    `json:"device"`
	Seq      uint64    `json:"seq"`
	Time     uint64    `json:"time"` // Unix milliseconds, device clock
	Epoch    uint64    `json:"epoch,omitempty"`
	Readings []Reading `json:"readings"`
	Account  string    `json:"account,omitempty"` // optional: which of the device's accounts to charge
	Session  string    `json:"session,omitempty"` // optional: a charging or vending session id
	// Grant names the grant the ticket's usage is under (a request id
	// the gateway answered with a grant); 0: none.
	Grant uint64 `json:"grant,omitempty"`
}

// Reading is one meter's cumulative register, in the meter's base unit.
type Reading struct {
	Meter    string `json:"meter"`
	Register uint64 `json:"register"`
}

// Ticket payload keys.
const (
	ticketDevice   = 1
	ticketSeq      = 2
	ticketTime     = 3
	ticketEpoch    = 4
	ticketReadings = 5
	ticketAccount  = 6
	ticketSession  = 7
	ticketGrant    = 8
)

// MaxSeq is the largest sequence number (ticket or aggregate).
const MaxSeq = 1<<63 - 1

// Validate checks t against the limits and rules of the wire format.
func (t *Ticket) Validate() error {
	if err := checkNameString(t.Device, MaxDeviceIDLen, "device id"); err != nil {
		return err
	}
	if t.Seq == 0 || t.Seq > MaxSeq {
		return newError(ReasonFieldRange, "seq must be in 1..2^63-1")
	}
	if t.Time == 0 {
		return newError(ReasonMissingField, "time is 0")
	}
	if len(t.Readings) == 0 || len(t.Readings) > MaxReadings {
		return newError(ReasonTooManyReadings, "a ticket carries 1..16 readings")
	}
	for i := range t.Readings {
		if err := checkNameString(t.Readings[i].Meter, MaxMeterNameLen, "meter name"); err != nil {
			return err
		}
		for j := 0; j < i; j++ {
			if t.Readings[j].Meter == t.Readings[i].Meter {
				return newError(ReasonDuplicateMeter, "meter "+t.Readings[i].Meter+" appears twice")
			}
		}
	}
	if t.Account != "" {
		if err := checkNameString(t.Account, MaxAccountLen, "account"); err != nil {
			return err
		}
	}
	if t.Session != "" {
		if err := checkNameString(t.Session, MaxSessionLen, "session"); err != nil {
			return err
		}
	}
	if t.Grant > MaxSeq {
		return newError(ReasonFieldRange, "a grant id is in 1..2^63-1")
	}
	return nil
}

// AppendTicketPayload validates t and appends its deterministic payload.
func AppendTicketPayload(dst []byte, t *Ticket) ([]byte, error) {
	if err := t.Validate(); err != nil {
		return dst, err
	}
	n := 5
	if t.Epoch != 0 {
		n++
	}
	if t.Account != "" {
		n++
	}
	if t.Session != "" {
		n++
	}
	if t.Grant != 0 {
		n++
	}
	dst = appendHead(dst, majorMap, uint64(n))
	dst = append(dst, keyKind, byte(KindTicket))
	dst = appendUint(dst, ticketDevice)
	dst = appendText(dst, t.Device)
	dst = appendUint(dst, ticketSeq)
	dst = appendUint(dst, t.Seq)
	dst = appendUint(dst, ticketTime)
	dst = appendUint(dst, t.Time)
	if t.Epoch != 0 {
		dst = appendUint(dst, ticketEpoch)
		dst = appendUint(dst, t.Epoch)
	}
	dst = appendUint(dst, ticketReadings)
	dst = appendHead(dst, majorArray, uint64(len(t.Readings)))
	for _, rd := range t.Readings {
		dst = append(dst, byte(majorArray|2))
		dst = appendText(dst, rd.Meter)
		dst = appendUint(dst, rd.Register)
	}
	if t.Account != "" {
		dst = appendUint(dst, ticketAccount)
		dst = appendText(dst, t.Account)
	}
	if t.Session != "" {
		dst = appendUint(dst, ticketSession)
		dst = appendText(dst, t.Session)
	}
	return appendOptUint(dst, ticketGrant, t.Grant), nil
}

// AppendTicket validates t, signs it with s and appends the tagged COSE
// message (COSE_Sign1 for EdDSA, COSE_Mac0 for HMAC) to dst. With enough
// room in dst it allocates nothing.
func (e *Encoder) AppendTicket(dst []byte, t *Ticket, s Signer) ([]byte, error) {
	p, err := AppendTicketPayload(e.payload(), t)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxTicketSize)
}
