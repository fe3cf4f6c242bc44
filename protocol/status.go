package protocol

// Status is the outcome of one ticket, carried in its receipt (key 3).
type Status uint8

// Receipt statuses. The numbers are part of the wire format.
const (
	// StatusAccepted: the ticket was verified, priced and committed.
	StatusAccepted Status = 0
	// StatusDuplicate: the ticket (or a newer one covering it) was already
	// accepted; it charged nothing now. The receipt repeats the original charge.
	StatusDuplicate Status = 1
	// StatusRejected: the ticket is refused for good; Reason says why.
	// Re-sending the same bytes will be refused again.
	StatusRejected Status = 2
	// StatusInsufficientFunds: a prepaid account cannot pay; nothing was
	// charged. The device should stop serving until the account is topped up.
	StatusInsufficientFunds Status = 3
	// StatusRetryLater: the gateway could not take the ticket now (disk near
	// its bound, store error, overload). Nothing was recorded; send it again
	// after RetryAfter.
	StatusRetryLater Status = 4
	// StatusHeld: the ticket was verified and committed, but a plausibility
	// rule of its meter held it (Reason names the rule): its usage is kept
	// in quarantine, charged nothing until an operator releases it, and
	// never charged twice. The device must not send it again.
	StatusHeld Status = 5
)

var statusNames = [...]string{"accepted", "duplicate", "rejected", "insufficient_funds", "retry_later", "held"}

// String returns the status' snake_case name.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "status_" + itoa(int64(s))
}

// Valid reports whether s is a status this version defines.
func (s Status) Valid() bool { return int(s) < len(statusNames) }

// Final reports whether the device may forget the ticket after a receipt
// with this status: every status but retry-later.
func (s Status) Final() bool { return s != StatusRetryLater }

// Reason says why a ticket was refused (receipt key 4). Every way a ticket
// can be refused has its own reason, so a gateway can count them and a device
// can act on them. The numbers are part of the wire format.
type Reason uint16

// Reasons. 1–31 are found by decoding, 32–63 by authentication, 64–95 by the
// gateway's checks against its state, 96–127 are transient (retry later).
const (
	ReasonNone Reason = 0

	// ReasonMalformed: not CBOR, or not the structure of the message.
	ReasonMalformed Reason = 1
	// ReasonTooLarge: the message is larger than its limit.
	ReasonTooLarge Reason = 2
	// ReasonNonCanonical: valid CBOR but not deterministically encoded
	// (RFC 8949 section 4.2.1): long-form integers, unsorted or duplicate
	// map keys, indefinite lengths, a default value written out.
	ReasonNonCanonical Reason = 3
	// ReasonUnexpectedTag: a CBOR tag other than the COSE message tag.
	ReasonUnexpectedTag Reason = 4
	// ReasonUnknownField: a map key this version does not define.
	ReasonUnknownField Reason = 5
	// ReasonMissingField: a required field is absent or empty.
	ReasonMissingField Reason = 6
	// ReasonFieldRange: a number outside its allowed range (seq 0, time 0…).
	ReasonFieldRange Reason = 7
	// ReasonStringTooLong: a string longer than its limit.
	ReasonStringTooLong Reason = 8
	// ReasonBadName: an identifier with characters outside [A-Za-z0-9._-]
	// or empty.
	ReasonBadName Reason = 9
	// ReasonTooManyReadings: more than MaxReadings readings, or none.
	ReasonTooManyReadings Reason = 10
	// ReasonDuplicateMeter: the same meter twice in one ticket.
	ReasonDuplicateMeter Reason = 11
	// ReasonWrongKind: a valid message, but not the kind expected here.
	ReasonWrongKind Reason = 12
	// ReasonBadHeader: a COSE header that is not exactly {alg, kid}
	// protected and nothing unprotected.
	ReasonBadHeader Reason = 13

	// ReasonUnsupportedAlg: an algorithm other than EdDSA or HMAC 256/256,
	// or one the device's key is not for.
	ReasonUnsupportedAlg Reason = 32
	// ReasonUnknownKey: no registered device has this key id.
	ReasonUnknownKey Reason = 33
	// ReasonBadSignature: the signature or MAC does not verify.
	ReasonBadSignature Reason = 34
	// ReasonDeviceMismatch: the ticket's device id differs from the key's
	// owner, the MQTT topic or the DTLS identity.
	ReasonDeviceMismatch Reason = 35
	// ReasonDeviceDisabled: the device is registered but switched off.
	ReasonDeviceDisabled Reason = 36
	// ReasonDeviceSuspended: the gateway suspended the device after it
	// broke its plausibility rules too often; an operator lifts it.
	ReasonDeviceSuspended Reason = 37
	// ReasonKeyRevoked: the key (or client certificate) was revoked.
	ReasonKeyRevoked Reason = 38

	// ReasonUnknownMeter: the device has no tariff for this meter.
	ReasonUnknownMeter Reason = 64
	// ReasonRegisterBackwards: a register lower than the last charged value
	// in the same epoch: held (StatusHeld), or refused where the meter's
	// rules say so.
	ReasonRegisterBackwards Reason = 65
	// ReasonEpochBackwards: a register epoch older than the current one.
	ReasonEpochBackwards Reason = 66
	// ReasonClockSkew: the device time is too far from the gateway's:
	// refused past the gateway's limit, held past a meter's own.
	ReasonClockSkew Reason = 67
	// ReasonUnknownAccount: the ticket names an account the device may not
	// charge.
	ReasonUnknownAccount Reason = 68
	// ReasonChargeOverflow: the charge does not fit the amount type.
	ReasonChargeOverflow Reason = 69
	// ReasonRegisterJump: with StatusHeld, a register increase larger than
	// the meter allows in one ticket.
	ReasonRegisterJump Reason = 70
	// ReasonSuperseded: with StatusDuplicate, a ticket never seen before
	// whose seq is below the device's last accepted one. Its readings are
	// cumulative registers that the later ticket already covers, so it
	// charges nothing: it is answered, not lost. (A plain repeat of an
	// accepted ticket is a duplicate without a reason.)
	ReasonSuperseded Reason = 71
	// ReasonSpendingCap: with StatusInsufficientFunds, the charge would
	// pass a spending cap (the account's per day or month, or the
	// device's per day), not the balance. Nothing is charged; a device
	// tells it from an empty account by this reason.
	ReasonSpendingCap Reason = 72
	// ReasonRateTooHigh: with StatusHeld, the usage is more than the meter
	// can count in the device time since its last reading.
	ReasonRateTooHigh Reason = 73
	// ReasonRegisterFault: with StatusHeld, the register is one of the
	// values the meter sends as an error code (all ones in 32 bits, …).
	ReasonRegisterFault Reason = 74
	// ReasonPaywordMismatch: the payword does not hash down to the chain's
	// last accepted payword (or its anchor): forged or of another chain.
	ReasonPaywordMismatch Reason = 75
	// ReasonChainUnknown: the device committed to no chain with this id
	// (a payword sent before its commitment, or another device's chain).
	ReasonChainUnknown Reason = 76
	// ReasonChainExhausted: the chain has expired (past its commitment's
	// expiry); a device commits the next chain before.
	ReasonChainExhausted Reason = 77
	// ReasonPaywordTooFar: the index is more than MaxPaywordSteps past the
	// last accepted one.
	ReasonPaywordTooFar Reason = 78
	// ReasonPaywordBackwards: the index is below the chain's last accepted
	// one; nothing is charged (the later payword covers its usage).
	ReasonPaywordBackwards Reason = 79

	// Voucher refusals: a voucher that changes nothing.

	// ReasonVoucherForged: not signed by an issuer the gateway trusts, or
	// its signature does not verify (tampered).
	ReasonVoucherForged Reason = 80
	// ReasonVoucherExpired: redeemed after its expiry.
	ReasonVoucherExpired Reason = 81
	// ReasonVoucherWrongAccount: for an account that is not this one (or
	// not one the gateway knows).
	ReasonVoucherWrongAccount Reason = 82
	// ReasonVoucherWrongCurrency: in another currency than its account.
	ReasonVoucherWrongCurrency Reason = 83
	// ReasonVoucherRedeemed: its id was redeemed before; a voucher id is
	// redeemed at most once, ever.
	ReasonVoucherRedeemed Reason = 84
	// ReasonVoucherOtherGateway: the voucher is bound to another gateway.
	ReasonVoucherOtherGateway Reason = 87
	// ReasonVoucherOtherDevice: the voucher is bound to a device, and this
	// is not that device (or not a device: an operator's redemption).
	ReasonVoucherOtherDevice Reason = 88
	// ReasonGrantUnknown: a ticket or a release names a grant that is
	// not the device's open grant for that meter (never made, or closed).
	ReasonGrantUnknown Reason = 89
	// ReasonGrantStale: a grant request's or a release's id is not above
	// the device's last one on that meter.
	ReasonGrantStale Reason = 90
	// ReasonGrantExceeded: a ticket under a grant whose charge neither
	// what is left of the grant nor the account's available balance
	// covers (a device that served past its grant): held for an operator.
	ReasonGrantExceeded Reason = 91
	// ReasonCommandForged: a command not signed by a control key the
	// gateway trusts.
	ReasonCommandForged Reason = 92
	// ReasonCommandExpired: a command past its expiry (or before its
	// not-before, when it cannot wait).
	ReasonCommandExpired Reason = 93
	// ReasonCommandOutOfOrder: a command whose seq is not the next of its
	// target's sequence.
	ReasonCommandOutOfOrder Reason = 94
	// ReasonCommandInvalid: a command the gateway cannot apply: an
	// unknown action, a tariff file that does not parse, an unknown
	// account.
	ReasonCommandInvalid Reason = 95
	// ReasonGrantPending: a release whose register is above what the
	// gateway has charged: the tickets up to it come first (retry later).
	ReasonGrantPending Reason = 100
	// ReasonVoucherRevoked: a voucher its provider revoked (a control
	// command): it is never redeemed.
	ReasonVoucherRevoked Reason = 101
	// ReasonChainReplayed: a chain commitment whose number is not above
	// the device's last one, or a chain id committed before with other
	// terms.
	ReasonChainReplayed Reason = 85
	// ReasonChainGap: a chain commitment whose start register is not the
	// register the device's chain of the meter has reached.
	ReasonChainGap Reason = 86

	// ReasonStorageFull: the gateway's disk is near its bound (retry later).
	ReasonStorageFull Reason = 96
	// ReasonStoreError: the gateway could not commit (retry later).
	ReasonStoreError Reason = 97
	// ReasonOverloaded: the gateway's queues are full (retry later).
	ReasonOverloaded Reason = 98
	// ReasonShuttingDown: the gateway is stopping (retry later).
	ReasonShuttingDown Reason = 99
)

// reasonNames lists every defined reason in ascending order. A table, not
// a map: firmware pays no map initialisation for it.
var reasonNames = [...]struct {
	r    Reason
	name string
}{
	{ReasonNone, "none"},
	{ReasonMalformed, "malformed"},
	{ReasonTooLarge, "too_large"},
	{ReasonNonCanonical, "non_canonical"},
	{ReasonUnexpectedTag, "unexpected_tag"},
	{ReasonUnknownField, "unknown_field"},
	{ReasonMissingField, "missing_field"},
	{ReasonFieldRange, "field_range"},
	{ReasonStringTooLong, "string_too_long"},
	{ReasonBadName, "bad_name"},
	{ReasonTooManyReadings, "too_many_readings"},
	{ReasonDuplicateMeter, "duplicate_meter"},
	{ReasonWrongKind, "wrong_kind"},
	{ReasonBadHeader, "bad_header"},
	{ReasonUnsupportedAlg, "unsupported_alg"},
	{ReasonUnknownKey, "unknown_key"},
	{ReasonBadSignature, "bad_signature"},
	{ReasonDeviceMismatch, "device_mismatch"},
	{ReasonDeviceDisabled, "device_disabled"},
	{ReasonDeviceSuspended, "device_suspended"},
	{ReasonKeyRevoked, "key_revoked"},
	{ReasonUnknownMeter, "unknown_meter"},
	{ReasonRegisterBackwards, "register_backwards"},
	{ReasonEpochBackwards, "epoch_backwards"},
	{ReasonClockSkew, "clock_skew"},
	{ReasonUnknownAccount, "unknown_account"},
	{ReasonChargeOverflow, "charge_overflow"},
	{ReasonRegisterJump, "register_jump"},
	{ReasonSuperseded, "superseded"},
	{ReasonSpendingCap, "spending_cap"},
	{ReasonRateTooHigh, "rate_too_high"},
	{ReasonRegisterFault, "register_fault"},
	{ReasonPaywordMismatch, "payword_mismatch"},
	{ReasonChainUnknown, "chain_unknown"},
	{ReasonChainExhausted, "chain_exhausted"},
	{ReasonPaywordTooFar, "payword_too_far"},
	{ReasonPaywordBackwards, "payword_backwards"},
	{ReasonVoucherForged, "voucher_forged"},
	{ReasonVoucherExpired, "voucher_expired"},
	{ReasonVoucherWrongAccount, "voucher_wrong_account"},
	{ReasonVoucherWrongCurrency, "voucher_wrong_currency"},
	{ReasonVoucherRedeemed, "voucher_redeemed"},
	{ReasonChainReplayed, "chain_replayed"},
	{ReasonChainGap, "chain_gap"},
	{ReasonVoucherOtherGateway, "voucher_other_gateway"},
	{ReasonVoucherOtherDevice, "voucher_other_device"},
	{ReasonGrantUnknown, "grant_unknown"},
	{ReasonGrantStale, "grant_stale"},
	{ReasonGrantExceeded, "grant_exceeded"},
	{ReasonCommandForged, "command_forged"},
	{ReasonCommandExpired, "command_expired"},
	{ReasonCommandOutOfOrder, "command_out_of_order"},
	{ReasonCommandInvalid, "command_invalid"},
	{ReasonStorageFull, "storage_full"},
	{ReasonStoreError, "store_error"},
	{ReasonOverloaded, "overloaded"},
	{ReasonShuttingDown, "shutting_down"},
	{ReasonGrantPending, "grant_pending"},
	{ReasonVoucherRevoked, "voucher_revoked"},
}

// String returns the reason's snake_case name, used as a metric label.
func (r Reason) String() string {
	for _, n := range reasonNames {
		if n.r == r {
			return n.name
		}
	}
	return "reason_" + itoa(int64(r))
}

// Valid reports whether r is a reason this version defines.
//
// The defined codes are runs (a test holds them to reasonNames), checked
// without the names so that firmware does not link the table.
func (r Reason) Valid() bool {
	return r >= 1 && r <= 13 || r >= 32 && r <= 38 || r >= 64 && r <= 101
}

// Transient reports whether the reason goes with StatusRetryLater.
func (r Reason) Transient() bool { return r >= 96 && r < 128 }

// Reasons lists every defined reason in ascending order, for tables and
// metric pre-registration.
func Reasons() []Reason {
	out := make([]Reason, len(reasonNames))
	for i, n := range reasonNames {
		out[i] = n.r
	}
	return out
}

// MarshalText writes the status' name, for JSON and logs.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a status name written by MarshalText.
func (s *Status) UnmarshalText(b []byte) error {
	for i, n := range statusNames {
		if n == string(b) {
			*s = Status(i)
			return nil
		}
	}
	return newError(ReasonFieldRange, "unknown status \""+string(b)+"\"")
}

// MarshalText writes the reason's name, for JSON and logs.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a reason name written by MarshalText.
func (r *Reason) UnmarshalText(b []byte) error {
	for _, n := range reasonNames {
		if n.name == string(b) {
			*r = n.r
			return nil
		}
	}
	return newError(ReasonFieldRange, "unknown reason \""+string(b)+"\"")
}
