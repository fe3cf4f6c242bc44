package protocol

// Receipt is the gateway's answer to one ticket, MAC'd with the device's
// receipt key (COSE_Mac0) or signed by the gateway (COSE_Sign1).
//
//	receipt-payload = {
//	  0: 2,                 ; kind: receipt
//	  1: device-id,         ; tstr, the ticket's device
//	  2: seq,               ; uint, the ticket's seq; 0 if the ticket could not be read
//	  3: status,            ; uint, Status: 0 accepted, 1 duplicate, 2 rejected,
//	                        ;   3 insufficient funds, 4 retry later
//	  ? 4: reason,          ; uint > 0, Reason; required with status 2 and 4, absent with 0,
//	                        ; with 1 only ReasonSuperseded (a never-seen seq below the last accepted);
//	                        ; with 3 only ReasonSpendingCap (a spending cap, not the balance)
//	  5: charged,           ; uint, nano-units of currency charged for this ticket
//	                        ;   (for a duplicate: what the original charged)
//	  ? 6: balance,         ; int, nano-units: prepaid balance, or remaining credit when postpaid
//	  ? 7: currency,        ; tstr, ISO 4217 code, e.g. "EUR"
//	  ? 8: retry-after,     ; uint > 0, milliseconds to wait before re-sending
//	  ? 9: voucher-id,      ; tstr: this answers a voucher the device passed on, not a
//	                        ;   ticket; seq is then 0, balance the account's after it
//	  ? 10: 1,              ; low balance: the account is below its low-balance level
//	  ? 11: ms,             ; uint > 0: the gateway's clock when it answered (Unix ms), for a
//	                        ;   device without a real-time clock to learn the time from
//	  ? 12: bstr .size 8,   ; the nonce of the time request this answers: seq 0, status 0
//	                        ;   and a time; nowhere else
//	  ? 13: grant,          ; the answer to a grant request or a release (grant.go): seq is
//	                        ;   the request id, status 0, charged 0
//	}
type Receipt struct {
	Device     string `json:"device"`
	Seq        uint64 `json:"seq"`
	Status     Status `json:"status"`
	Reason     Reason `json:"reason,omitempty"`
	Charged    uint64 `json:"charged"`           // nano-units of Currency
	Balance    int64  `json:"balance,omitempty"` // nano-units of Currency; meaningful only if HasBalance
	HasBalance bool   `json:"has_balance,omitempty"`
	Currency   string `json:"currency,omitempty"`
	RetryAfter uint32 `json:"retry_after,omitempty"` // milliseconds
	// Voucher is set when the receipt answers a voucher, not a ticket.
	Voucher string `json:"voucher,omitempty"`
	// LowBalance: the account is below its low-balance level; a machine
	// can warn its customer before it runs dry.
	LowBalance bool `json:"low_balance,omitempty"`
	// Time is the gateway's clock when it answered (Unix ms; 0: not
	// given). It is inside the MAC or signature, so a device can take it
	// as the time (devicefw.Client.Now).
	Time uint64 `json:"time_ms,omitempty"`
	// Nonce is set (not all zero) in the answer to a time request
	// (TimeRequest): seq 0, status accepted, a time.
	Nonce [8]byte `json:"nonce,omitzero"`
	// Grant answers a grant request or a release (Grant.ID != 0); Seq
	// is then the request's id.
	Grant Grant `json:"grant,omitzero"`
}

// IsGrant reports whether r answers a grant request or a release with a
// grant.
func (r *Receipt) IsGrant() bool { return r.Grant.ID != 0 }

// IsTimeAnswer reports whether r answers a time request.
func (r *Receipt) IsTimeAnswer() bool { return r.Nonce != [8]byte{} }

// Receipt payload keys.
const (
	receiptDevice     = 1
	receiptSeq        = 2
	receiptStatus     = 3
	receiptReason     = 4
	receiptCharged    = 5
	receiptBalance    = 6
	receiptCurrency   = 7
	receiptRetryAfter = 8
	receiptVoucher    = 9
	receiptLowBalance = 10
	receiptTime       = 11
	receiptNonce      = 12
	receiptGrant      = 13
)

// Validate checks r against the limits and rules of the wire format; a
// grant's are validateGrant's (AppendReceiptPayload and ParseGrantReceipt
// check both), so that firmware without grants does not link them.
func (r *Receipt) Validate() error {
	if err := checkNameString(r.Device, MaxDeviceIDLen, "device id"); err != nil {
		return err
	}
	if r.Seq > MaxSeq {
		return newError(ReasonFieldRange, "seq must be in 0..2^63-1")
	}
	if r.Voucher != "" {
		if err := checkNameString(r.Voucher, MaxDeviceIDLen, "voucher id"); err != nil {
			return err
		}
		if r.Seq != 0 {
			return newError(ReasonFieldRange, "a voucher's receipt has seq 0")
		}
	} else if r.IsTimeAnswer() {
		if r.Seq != 0 || r.Status != StatusAccepted || r.Time == 0 {
			return newError(ReasonFieldRange, "a time answer has seq 0, status accepted and a time")
		}
	} else if r.Seq == 0 && r.Status != StatusRejected && r.Status != StatusRetryLater {
		return newError(ReasonFieldRange, "seq 0 (an unreadable ticket) goes only with rejected or retry later")
	}
	if !r.Status.Valid() {
		return newError(ReasonFieldRange, "unknown status")
	}
	if r.Reason != ReasonNone && !r.Reason.Valid() {
		return newError(ReasonFieldRange, "unknown reason")
	}
	switch r.Status {
	case StatusAccepted:
		if r.Reason != ReasonNone {
			return newError(ReasonFieldRange, "reason given with status "+r.Status.String())
		}
	case StatusDuplicate:
		if r.Reason != ReasonNone && r.Reason != ReasonSuperseded {
			return newError(ReasonFieldRange, "a duplicate's only reason is superseded")
		}
	case StatusInsufficientFunds:
		if r.Reason != ReasonNone && r.Reason != ReasonSpendingCap {
			return newError(ReasonFieldRange, "insufficient funds' only reason is spending_cap")
		}
	case StatusRejected, StatusRetryLater, StatusHeld:
		if r.Reason == ReasonNone {
			return newError(ReasonMissingField, "status "+r.Status.String()+" needs a reason")
		}
	}
	if r.Currency != "" {
		if err := checkNameString(r.Currency, MaxCurrencyLen, "currency"); err != nil {
			return err
		}
	}
	return nil
}

// AppendReceiptPayload validates r and appends its deterministic payload.
func AppendReceiptPayload(dst []byte, r *Receipt) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return dst, err
	}
	if err := r.validateGrant(); err != nil {
		return dst, err
	}
	n := 5
	for _, present := range [...]bool{r.Reason != 0, r.HasBalance, r.Currency != "", r.RetryAfter != 0, r.Voucher != "", r.LowBalance, r.Time != 0, r.IsTimeAnswer(), r.IsGrant()} {
		if present {
			n++
		}
	}
	dst = appendHead(dst, majorMap, uint64(n))
	dst = append(dst, keyKind, byte(KindReceipt))
	dst = appendUint(dst, receiptDevice)
	dst = appendText(dst, r.Device)
	dst = appendUint(dst, receiptSeq)
	dst = appendUint(dst, r.Seq)
	dst = appendUint(dst, receiptStatus)
	dst = appendUint(dst, uint64(r.Status))
	if r.Reason != 0 {
		dst = appendUint(dst, receiptReason)
		dst = appendUint(dst, uint64(r.Reason))
	}
	dst = appendUint(dst, receiptCharged)
	dst = appendUint(dst, r.Charged)
	if r.HasBalance {
		dst = appendUint(dst, receiptBalance)
		dst = appendInt(dst, r.Balance)
	}
	if r.Currency != "" {
		dst = appendUint(dst, receiptCurrency)
		dst = appendText(dst, r.Currency)
	}
	if r.RetryAfter != 0 {
		dst = appendUint(dst, receiptRetryAfter)
		dst = appendUint(dst, uint64(r.RetryAfter))
	}
	if r.Voucher != "" {
		dst = appendUint(dst, receiptVoucher)
		dst = appendText(dst, r.Voucher)
	}
	if r.LowBalance {
		dst = appendUint(dst, receiptLowBalance)
		dst = appendUint(dst, 1)
	}
	if r.Time != 0 {
		dst = appendUint(dst, receiptTime)
		dst = appendUint(dst, r.Time)
	}
	if r.IsTimeAnswer() {
		dst = appendUint(dst, receiptNonce)
		dst = appendBytes(dst, r.Nonce[:])
	}
	if r.IsGrant() {
		dst = appendGrant(appendUint(dst, receiptGrant), &r.Grant)
	}
	return dst, nil
}

// AppendReceipt validates r, signs or MACs it with s and appends the tagged
// COSE message to dst.
func (e *Encoder) AppendReceipt(dst []byte, r *Receipt, s Signer) ([]byte, error) {
	p, err := AppendReceiptPayload(e.payload(), r)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxReceiptSize)
}

// ParseReceipt parses a receipt with the canonical reader of the device
// path, filling env and r; it does not verify the signature (call
// env.Verify). It accepts exactly the bytes AppendReceipt writes and
// refuses anything else with an *Error.
//
// To spare firmware an allocation, a string field of r that already holds
// the value on the wire is left as it is: set r.Device to the device's own
// id (and r.Currency to its currency) before calling.
//
// A receipt that carries a grant (key 13) is refused here as an unknown
// field: ParseGrantReceipt reads it, so that firmware that never asks for
// a grant does not link the grant's parser.
func ParseReceipt(b []byte, env *Envelope, r *Receipt) error { return parseReceipt(b, env, r, nil) }

// ParseGrantReceipt is ParseReceipt for a device that asks for grants:
// it also reads a receipt's grant (key 13).
func ParseGrantReceipt(b []byte, env *Envelope, r *Receipt) error {
	if err := parseReceipt(b, env, r, (*Grant).readFrom); err != nil {
		return err
	}
	return r.validateGrant()
}

// validateGrant checks a receipt's grant: it answers a request id (seq)
// with status accepted, nothing charged, and is a valid Grant.
func (r *Receipt) validateGrant() error {
	if !r.IsGrant() {
		return nil
	}
	if r.Seq == 0 || r.Status != StatusAccepted || r.Charged != 0 || r.Voucher != "" || r.IsTimeAnswer() {
		return newError(ReasonFieldRange, "grant out of range")
	}
	return r.Grant.Validate()
}

// parseReceipt is ParseReceipt, reading a grant with readGrant (nil: a
// grant is an unknown field), which returns the bytes it read.
func parseReceipt(b []byte, env *Envelope, r *Receipt, readGrant func(*Grant, []byte) (int, error)) error {
	if len(b) > MaxReceiptSize {
		return newError(ReasonTooLarge, "receipt is larger than its limit")
	}
	if err := ParseEnvelope(b, env); err != nil {
		return err
	}
	rd := reader{b: env.Payload}
	keys := rd.mapOf(16, "receipt payload")
	seen := 0
	// Reset everything optional; required fields are checked below.
	r.Reason, r.Balance, r.HasBalance, r.RetryAfter, r.LowBalance, r.Time, r.Nonce = 0, 0, false, 0, false, 0, [8]byte{}
	r.Grant = Grant{Meter: r.Grant.Meter}
	currency, voucher := false, false
	for {
		k, ok := keys.next()
		if !ok {
			break
		}
		if k == receiptGrant && readGrant != nil {
			n, err := readGrant(&r.Grant, rd.b[rd.off:])
			if rd.off += n; err != nil {
				return err
			}
		} else if err := r.readField(&rd, k, &currency, &voucher); err != nil {
			return err
		}
		seen |= 1 << k
	}
	rd.done()
	if rd.err != nil {
		return rd.err
	}
	if !currency {
		r.Currency = ""
	}
	if !voucher {
		r.Voucher = ""
	}
	if r.Grant.ID == 0 {
		r.Grant.Meter = ""
	}
	const required = 1<<keyKind | 1<<receiptDevice | 1<<receiptSeq | 1<<receiptStatus | 1<<receiptCharged
	if seen&required != required {
		return newError(ReasonMissingField, "receipt lacks a required field")
	}
	return r.Validate()
}

// readField reads one field of a receipt's payload, key k, into r; a
// field out of its range fails rd. currency and voucher record that
// those optional fields were present.
func (r *Receipt) readField(rd *reader, k int64, currency, voucher *bool) error {
	switch k {
	case keyKind:
		if k := rd.uint("kind"); k != uint64(KindReceipt) && rd.err == nil {
			return newError(ReasonWrongKind, "not a receipt")
		}
	case receiptDevice:
		p := rd.text(MaxDeviceIDLen, "device id")
		if string(p) != r.Device {
			r.Device = string(p)
		}
	case receiptSeq:
		r.Seq = rd.uint("seq")
	case receiptStatus:
		s := rd.uint("status")
		if s > 255 {
			rd.fail(ReasonFieldRange, "unknown status")
		}
		r.Status = Status(s)
	case receiptReason:
		s := rd.uint("reason")
		if s > 0xffff || s == 0 {
			rd.fail(ReasonNonCanonical, "reason out of range or written out as 0")
		}
		r.Reason = Reason(s)
	case receiptCharged:
		r.Charged = rd.uint("charged")
	case receiptBalance:
		r.Balance, r.HasBalance = rd.int("balance"), true
	case receiptCurrency:
		p := rd.text(MaxCurrencyLen, "currency")
		if string(p) != r.Currency {
			r.Currency = string(p)
		}
		*currency = true
	case receiptRetryAfter:
		s := rd.uint("retry-after")
		if s == 0 || s > 0xffffffff {
			rd.fail(ReasonFieldRange, "retry-after out of range or written out as 0")
		}
		r.RetryAfter = uint32(s)
	case receiptVoucher:
		p := rd.text(MaxDeviceIDLen, "voucher id")
		if string(p) != r.Voucher {
			r.Voucher = string(p)
		}
		*voucher = true
	case receiptLowBalance:
		if rd.uint("low balance") != 1 && rd.err == nil {
			rd.fail(ReasonNonCanonical, "low balance is written as 1 or left out")
		}
		r.LowBalance = true
	case receiptTime:
		if r.Time = rd.uint("time"); r.Time == 0 && rd.err == nil {
			rd.fail(ReasonNonCanonical, "a time of 0 is left out")
		}
	case receiptNonce:
		if rd.fixed(r.Nonce[:], "nonce"); r.Nonce == ([8]byte{}) && rd.err == nil {
			rd.fail(ReasonNonCanonical, "a nonce of zeros is left out")
		}
	default:
		rd.fail(ReasonUnknownField, "unknown receipt field")
	}
	return nil
}
