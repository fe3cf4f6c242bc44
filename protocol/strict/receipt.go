package strict

import "github.com/farthing-iot/farthing/protocol"

type receiptPayload struct {
	Kind       uint8         `cbor:"0,keyasint"`
	Device     string        `cbor:"1,keyasint"`
	Seq        uint64        `cbor:"2,keyasint"`
	Status     uint8         `cbor:"3,keyasint"`
	Reason     uint16        `cbor:"4,keyasint"`
	Charged    uint64        `cbor:"5,keyasint"`
	Balance    *int64        `cbor:"6,keyasint"`
	Currency   string        `cbor:"7,keyasint"`
	RetryAfter uint32        `cbor:"8,keyasint"`
	Voucher    string        `cbor:"9,keyasint"`
	LowBalance uint8         `cbor:"10,keyasint"`
	Time       uint64        `cbor:"11,keyasint"`
	Nonce      []byte        `cbor:"12,keyasint"`
	Grant      *grantPayload `cbor:"13,keyasint"`
}

type grantPayload struct {
	ID        uint64 `cbor:"1,keyasint"`
	Meter     string `cbor:"2,keyasint"`
	Limit     uint64 `cbor:"3,keyasint"`
	Threshold uint64 `cbor:"4,keyasint"`
	Reserved  uint64 `cbor:"5,keyasint"`
	Expiry    uint64 `cbor:"6,keyasint"`
	Validity  uint64 `cbor:"7,keyasint"`
	Idle      uint64 `cbor:"8,keyasint"`
	Final     uint8  `cbor:"9,keyasint"`
	Grace     uint64 `cbor:"10,keyasint"`
	Closed    uint8  `cbor:"11,keyasint"`
	Epoch     uint64 `cbor:"12,keyasint"`
}

// DecodeReceipt decodes an untrusted receipt. It does not verify the
// signature; call env.Verify.
func DecodeReceipt(b []byte) (protocol.Envelope, protocol.Receipt, error) {
	var r protocol.Receipt
	env, err := decodeEnvelope(b, protocol.MaxReceiptSize)
	if err != nil {
		return env, r, err
	}
	if err := peekKind(env.Payload, protocol.KindReceipt); err != nil {
		return env, r, err
	}
	var p receiptPayload
	if err := decMode.Unmarshal(env.Payload, &p); err != nil {
		return env, r, refusal(err, "receipt payload")
	}
	if err := checkKind(p.Kind, protocol.KindReceipt); err != nil {
		return env, r, err
	}
	r = protocol.Receipt{Device: p.Device, Seq: p.Seq, Status: protocol.Status(p.Status), Reason: protocol.Reason(p.Reason),
		Charged: p.Charged, Currency: p.Currency, RetryAfter: p.RetryAfter, Voucher: p.Voucher, LowBalance: p.LowBalance != 0,
		Time: p.Time}
	if p.Balance != nil {
		r.Balance, r.HasBalance = *p.Balance, true
	}
	if p.Nonce != nil {
		if len(p.Nonce) != len(r.Nonce) {
			return env, r, &protocol.Error{Reason: protocol.ReasonFieldRange, Detail: "a receipt's nonce is 8 bytes"}
		}
		copy(r.Nonce[:], p.Nonce)
	}
	if g := p.Grant; g != nil {
		if g.ID == 0 {
			return env, r, &protocol.Error{Reason: protocol.ReasonMissingField, Detail: "a receipt's grant has no id"}
		}
		r.Grant = protocol.Grant{ID: g.ID, Meter: g.Meter, Limit: g.Limit, Threshold: g.Threshold, Reserved: g.Reserved,
			Expiry: g.Expiry, Validity: g.Validity, Idle: g.Idle, Final: protocol.FinalAction(g.Final), Grace: g.Grace,
			Closed: protocol.GrantClosed(g.Closed), Epoch: g.Epoch}
	}
	var buf [protocol.MaxReceiptSize]byte
	again, err := protocol.AppendReceiptPayload(buf[:0], &r)
	if err != nil {
		return env, r, err
	}
	if err := checkCanonical(b, &env, again); err != nil {
		return env, r, err
	}
	return env, r, nil
}
